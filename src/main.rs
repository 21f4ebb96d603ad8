//! Entry point: install the crypto provider, parse arguments, run the subcommand, exit with a sysexits code.

use std::process::ExitCode;

use xyte_edge::cli::{self, Command};
use xyte_edge::{app, exit, mcp, sim};

fn main() -> ExitCode {
    // One crypto provider (ring) for every TLS user in the process, installed before any rustls use: with two
    // providers compiled in, rustls panics at run time unless one is the process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        _ if cli.version => version(),
        Some(Command::Version) => version(),
        Some(Command::CheckConfig { config }) => cli::check_config(config),
        Some(Command::Token { command }) => cli::token::run(command),
        Some(Command::Diagnose { config, to }) => cli::diagnose::run(config, to),
        Some(Command::Backup { config, to, with_secrets }) => cli::backup::backup(config, to, with_secrets),
        Some(Command::Restore { file, config, with_config }) => cli::backup::restore(file, config, with_config),
        Some(Command::Mcp { socket }) => mcp::bridge::run(&cli::socket_path(socket)),
        Some(Command::Status { socket }) => mcp::bridge::status(&cli::socket_path(socket)),
        Some(Command::Serve { config, demo }) => app::serve(config, demo),
        Some(Command::Sim { listen, devices, seed, faults }) => sim_command(listen, devices, seed, faults),
        None => {
            eprintln!("xyte-edge: a subcommand is required; see `xyte-edge --help`");
            ExitCode::from(exit::USAGE)
        }
    }
}

fn version() -> ExitCode {
    println!("{}", cli::version_text());
    ExitCode::SUCCESS
}

fn sim_command(listen: std::net::SocketAddr, devices: usize, seed: u64, faults: Option<String>) -> ExitCode {
    let faults = match faults.as_deref().map(str::parse).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            eprintln!("xyte-edge sim: --faults: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let opts = sim::SimOptions { devices, seed, faults, ..Default::default() };
    match app::runtime().and_then(|rt| rt.block_on(sim::run_standalone(listen, opts))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xyte-edge sim: {e}");
            ExitCode::from(exit::UNAVAILABLE)
        }
    }
}
