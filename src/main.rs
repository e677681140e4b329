//! The `ctsentinel` binary: parses the command line and calls one library function per
//! command. Exit codes: 0 success, 2 input errors (unreadable or rejected input), 1 internal
//! failure.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use ctsentinel::{pipeline, present};

#[derive(Parser)]
#[command(name = "ctsentinel", version, about = "Chest-CT COVID-19 appliance (research use only, not a diagnosis)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Select the open-lung slices of each series in a patient or series folder (COVID-CTset rule).
    Select {
        /// A patient folder (holding series folders) or one series folder.
        dir: PathBuf,
        /// Print the JSON contract instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Exit code for input the user can fix (missing folder, undecodable slice).
const EXIT_INPUT: u8 = 2;
/// Exit code for failures of the program itself.
const EXIT_INTERNAL: u8 = 1;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(Failure::Input(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_INPUT)
        }
        Err(Failure::Internal(e)) => {
            eprintln!("internal error: {e:#}");
            ExitCode::from(EXIT_INTERNAL)
        }
    }
}

enum Failure {
    Input(anyhow::Error),
    Internal(anyhow::Error),
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Select { dir, json } => {
            let report = pipeline::select_folder(&dir)
                .with_context(|| format!("cannot select slices in {}", dir.display()))
                .map_err(Failure::Input)?;
            if json {
                let text = serde_json::to_string_pretty(&report).context("serialising report").map_err(Failure::Internal)?;
                println!("{text}");
            } else {
                print!("{}", present::select_table(&report));
            }
            Ok(if report.any_rejected() { ExitCode::from(EXIT_INPUT) } else { ExitCode::SUCCESS })
        }
    }
}
