//! The peers and the floors as processes of their own, like the daemon they are compared with.
//!
//! Each is this same binary started as `xyte-bench serve SPEC.json`: the spec names the server and holds what it
//! answers (the daemon's own documents, taken in the same run). The child builds a runtime with as many workers as
//! the daemon (2), starts the server, prints `listening on ADDR` and serves until it is killed (or its parent dies).
//! In-process servers shared the load generator's address space: waking a thread of the same process is cheaper
//! than waking another process, which flattered the peers against the daemon (BENCHMARKS.md).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use bytes::Bytes;
use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use crate::load;
use crate::peers::{self, McpAnswers, RestAnswers};
use crate::procs::{Proc, Res};

/// What a server process is to serve.
pub enum Spec<'a> {
    /// The MCP floor: a newline echo on a Unix socket.
    Echo { socket: &'a Path },
    /// The rmcp peer on a Unix socket.
    Rmcp { socket: &'a Path, answers: &'a McpAnswers },
    /// The axum peer on 127.0.0.1 over TLS, accepting `token` only.
    Axum { cert: &'a Path, key: &'a Path, token: &'a str, answers: &'a RestAnswers },
    /// The REST floor on 127.0.0.1 over TLS: one answer for every request.
    Hyper { cert: &'a Path, key: &'a Path, headers: &'a HeaderMap, body: &'a Bytes },
}

/// A running server process; killed when dropped.
pub struct Server {
    proc: Proc,
    /// Its socket path or `127.0.0.1:port`.
    pub addr: String,
}

impl Server {
    /// Starts `spec` as a child process (its spec file and log in `dir`) and waits until it listens.
    pub fn start(dir: &Path, name: &str, spec: &Spec) -> Res<Server> {
        let doc = match spec {
            Spec::Echo { socket } => json!({"kind": "echo", "socket": socket}),
            Spec::Rmcp { socket, answers } => {
                json!({"kind": "rmcp", "socket": socket, "status": answers.status, "list": answers.list})
            }
            Spec::Axum { cert, key, token, answers } => {
                let answers: Map<String, Value> =
                    answers.iter().map(|(d, (h, b))| Ok((d.clone(), answer_json(h, b)?))).collect::<Res<_>>()?;
                json!({"kind": "axum", "cert": cert, "key": key, "token": token, "answers": answers})
            }
            Spec::Hyper { cert, key, headers, body } => {
                json!({"kind": "hyper", "cert": cert, "key": key, "answer": answer_json(headers, body)?})
            }
        };
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, doc.to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
        let exe = std::env::current_exe().map_err(|e| format!("the runner's own path: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve").arg(&path);
        let mut proc = Proc::spawn(name, cmd, dir)?;
        let line = proc.wait_line("listening on ", Duration::from_secs(30))?;
        let addr = line.split("listening on ").nth(1).unwrap_or_default().trim().to_string();
        Ok(Server { proc, addr })
    }

    /// Its TCP address (the REST peer and floor).
    pub fn socket_addr(&self) -> Res<SocketAddr> {
        self.addr.parse().map_err(|e| format!("{}: {e}", self.addr))
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// An error with the server's last output if it has exited.
    pub fn alive(&mut self) -> Res<()> {
        self.proc.alive()
    }
}

fn answer_json(headers: &HeaderMap, body: &Bytes) -> Res<Value> {
    let headers: Vec<Value> = headers
        .iter()
        .map(|(k, v)| Ok(json!([k.as_str(), v.to_str().map_err(|e| format!("header {k}: {e}"))?])))
        .collect::<Res<_>>()?;
    let body = std::str::from_utf8(body).map_err(|e| format!("a body that is not text: {e}"))?;
    Ok(json!({"headers": headers, "body": body}))
}

fn answer_from(v: &Value) -> Res<(HeaderMap, Bytes)> {
    let mut headers = HeaderMap::new();
    for pair in v["headers"].as_array().ok_or("an answer without headers")? {
        let (Some(k), Some(v)) = (pair[0].as_str(), pair[1].as_str()) else { return Err("a header pair".into()) };
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("{k}: {e}"))?;
        headers.append(name, HeaderValue::from_str(v).map_err(|e| format!("{k}: {e}"))?);
    }
    let body = v["body"].as_str().ok_or("an answer without a body")?;
    Ok((headers, Bytes::copy_from_slice(body.as_bytes())))
}

/// `xyte-bench serve SPEC.json`: the child's whole life.
pub fn child(spec: &Path) -> ExitCode {
    match serve(spec) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xyte-bench serve {}: {e}", spec.display());
            ExitCode::FAILURE
        }
    }
}

fn serve(spec: &Path) -> Res<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers: a runner that dies (even by SIGKILL) takes this along.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let text = std::fs::read_to_string(spec).map_err(|e| e.to_string())?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let path = |k: &str| doc[k].as_str().map(PathBuf::from).ok_or(format!("the spec has no {k}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(doc["kind"].as_str().unwrap_or("server"))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let addr = match doc["kind"].as_str() {
        Some("echo") => {
            let socket = path("socket")?;
            load::echo_server(&rt, socket.clone())?;
            socket.display().to_string()
        }
        Some("rmcp") => {
            let status: HashMap<String, Value> =
                serde_json::from_value(doc["status"].clone()).map_err(|e| format!("status: {e}"))?;
            let answers = McpAnswers { status, list: doc["list"].clone() };
            let socket = path("socket")?;
            peers::mcp_peer(&rt, socket.clone(), &answers)?;
            socket.display().to_string()
        }
        Some("axum") => {
            let answers: RestAnswers = doc["answers"]
                .as_object()
                .ok_or("the spec has no answers")?
                .iter()
                .map(|(d, a)| Ok((d.clone(), answer_from(a)?)))
                .collect::<Res<_>>()?;
            let token = doc["token"].as_str().ok_or("the spec has no token")?;
            peers::rest_peer(&rt, &path("cert")?, &path("key")?, token, answers)?.to_string()
        }
        Some("hyper") => {
            let (headers, body) = answer_from(&doc["answer"])?;
            load::hyper_floor(&rt, &path("cert")?, &path("key")?, headers, body)?.to_string()
        }
        other => return Err(format!("unknown server kind {other:?}")),
    };
    println!("listening on {addr}");
    rt.block_on(std::future::pending::<()>());
    Ok(())
}
