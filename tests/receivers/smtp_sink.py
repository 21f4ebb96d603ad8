"""An SMTP receiver for the alert tests (aiosmtpd): STARTTLS with the given certificate, AUTH (PLAIN/LOGIN) required
after STARTTLS with the given user and password, on a loopback port (ephemeral, or PORT when given, so a test can stop
the sink and start it again where the sender expects it). Prints one JSON line per event to stdout: {"port": N} once
listening, then {"mail_from", "rcpt_tos", "data", "user", "subject", "body", "at"} per accepted message, where
"subject" is the decoded (RFC 2047, unfolded) Subject header, "body" the decoded plain-text body and "at" the Unix
time of acceptance in seconds.

Usage: python smtp_sink.py CERT KEY USER PASSWORD [PORT]
"""
import email
import email.policy
import json
import socket
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

cert, key, user, password = sys.argv[1:5]
fixed_port = int(sys.argv[5]) if len(sys.argv) > 5 else 0


def say(obj):
    print(json.dumps(obj), flush=True)


def decoded(raw):
    """The subject and plain-text body as a mail client shows them; None for what cannot be read."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        part = msg.get_body(preferencelist=("plain",))
        return str(msg["subject"]) if msg["subject"] is not None else None, part.get_content() if part else None
    except Exception as e:  # the test fails on a None with the raw data beside it
        print(f"cannot parse the message: {e}", file=sys.stderr, flush=True)
        return None, None


class Handler:
    async def handle_DATA(self, server, session, envelope):
        subject, body = decoded(envelope.content)
        say({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
             "data": envelope.content.decode("utf-8", "replace"),
             "user": session.auth_data.login.decode() if session.auth_data else None,
             "subject": subject, "body": body, "at": time.time()})
        return "250 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user \
        and auth_data.password.decode() == password
    # handled=False: aiosmtpd then answers 535 itself (with its default, True, it answers nothing).
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
# aiosmtpd's controller checks its server by connecting to the port it was given, so it needs a real one.
port = fixed_port
if port == 0:
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
