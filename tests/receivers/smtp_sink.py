"""An SMTP receiver for the alert tests (aiosmtpd): STARTTLS with the given certificate, AUTH (PLAIN/LOGIN) required
after STARTTLS with the given user and password, on an ephemeral loopback port. Prints one JSON line per event to
stdout: {"port": N} once listening, then {"mail_from", "rcpt_tos", "data", "user"} per accepted message.

Usage: python smtp_sink.py CERT KEY USER PASSWORD
"""
import json
import socket
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

cert, key, user, password = sys.argv[1:5]


def say(obj):
    print(json.dumps(obj), flush=True)


class Handler:
    async def handle_DATA(self, server, session, envelope):
        say({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
             "data": envelope.content.decode("utf-8", "replace"),
             "user": session.auth_data.login.decode() if session.auth_data else None})
        return "250 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user \
        and auth_data.password.decode() == password
    # handled=False: aiosmtpd then answers 535 itself (with its default, True, it answers nothing).
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
# aiosmtpd's controller checks its server by connecting to the port it was given, so it needs a real one.
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
controller = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                        auth_require_tls=True, authenticator=authenticator, auth_exclude_mechanism=["CRAM-MD5"],
                        server_hostname="localhost")
controller.start()
say({"port": port})
# Runs until the test closes our stdin (or kills us).
sys.stdin.read()
controller.stop()
