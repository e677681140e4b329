//! The `ctsentinel` binary: parses the command line and calls one library function per
//! command. Exit codes: 0 success, 2 input errors (unreadable or rejected input), 1 internal
//! failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use ctsentinel::classify::{self, Classifier};
use ctsentinel::{pipeline, present};

#[derive(Parser)]
#[command(
    name = "ctsentinel",
    version,
    about = "Chest-CT COVID-19 appliance (research use only, not a diagnosis)"
)]
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
    /// Scan a patient or series folder: select, classify the selected slices, give the verdict.
    Scan {
        /// A patient folder (holding series folders) or one series folder.
        dir: PathBuf,
        /// Print the JSON contract instead of the summary.
        #[arg(long)]
        json: bool,
        /// Also write the JSON contract to this file, atomically (temp file, fsync, rename).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write the result as a DICOM Comprehensive SR referencing the source instances
        /// (DICOM input only), atomically.
        #[arg(long)]
        sr: Option<PathBuf>,
        /// Also write the per-patient report sheet (PNG: verdict, counts, rule, model identity,
        /// the selected slices in order with their P(COVID)), atomically.
        #[arg(long)]
        report: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Classify single images with no selection (16-bit TIFF slices; 8-bit grayscale PNG/JPEG
    /// already in the model card's window).
    Classify {
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Site validation: scan every patient of a labels CSV (`path,label`; labels covid, normal
    /// or other; paths relative to the CSV) exactly as `scan` does, and report sensitivity and
    /// specificity with 95% Wilson intervals, the undetermined rate and the evidence-in-lungs
    /// share.
    Validate {
        #[arg(long)]
        labels: PathBuf,
        /// Print the JSON report instead of the summary.
        #[arg(long)]
        json: bool,
        /// Also write the one-page PNG report, atomically.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Keep the report as the model's site validation record in this folder (the
        /// service's `<state>/validation`, read by `[validation] require = true`).
        #[arg(long)]
        record: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Power-up self-test: model integrity, selection kernel, known answers of the model.
    Selftest(SelfTestArgs),
    /// Render every bedside screen at 320x240 and 800x480 for review.
    DisplayDemo {
        /// Only `png` here; the service drives the framebuffer.
        #[arg(long, default_value = "png")]
        backend: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Set the results page's password (`[web]`): read from standard input, kept as an argon2id
    /// hash in the state folder; the running service reads it at its next start.
    SetPassword {
        #[arg(long)]
        config: PathBuf,
        /// Folder of board profiles (as for `watch`).
        #[arg(long)]
        boards: Option<PathBuf>,
    },
    /// Run the appliance: self-test, then watch the drop folders and process each series once.
    Watch {
        #[arg(long)]
        config: PathBuf,
        /// Folder of board profiles (default: beside the config, ./boards, /usr/share/ctsentinel/boards).
        #[arg(long)]
        boards: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct SelfTestArgs {
    #[arg(long)]
    json: bool,
    /// Also check a service configuration: folders, free disk, display backend.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// Model card (.toml) or a folder holding exactly one. Default: $CTSENTINEL_MODELS, else
    /// ./models, else /usr/share/ctsentinel/models.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Threads for inference (default: available cores, at most 4).
    #[arg(long)]
    threads: Option<usize>,
}

impl ModelArgs {
    fn path(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(default_models)
    }

    fn options(&self) -> classify::Options {
        let mut options = classify::Options::default();
        if let Some(t) = self.threads {
            options.threads = t.max(1);
        }
        options
    }

    fn load(&self) -> anyhow::Result<Classifier> {
        load_model(&self.path(), self.options())
    }

    /// [`ModelArgs::load`] on a thread of its own, so the caller can read and select slices
    /// meanwhile (loading and optimising the model is single-threaded and takes a sizeable part
    /// of a short scan: `bench/scan_thin.sh`).
    fn load_in_background(&self) -> std::thread::JoinHandle<anyhow::Result<Classifier>> {
        let (path, options) = (self.path(), self.options());
        std::thread::spawn(move || load_model(&path, options))
    }
}

fn load_model(path: &Path, options: classify::Options) -> anyhow::Result<Classifier> {
    Classifier::load(path, options).with_context(|| format!("cannot load the model from {}", path.display()))
}

fn default_models() -> PathBuf {
    if let Some(p) = std::env::var_os("CTSENTINEL_MODELS") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from("models");
    if local.is_dir() {
        local
    } else {
        PathBuf::from("/usr/share/ctsentinel/models")
    }
}

/// Exit code for input the user can fix (missing folder, undecodable slice).
const EXIT_INPUT: u8 = 2;
/// Exit code for failures of the program itself.
const EXIT_INTERNAL: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The service stops cleanly on SIGTERM from the first moment on (systemd may stop it while
    // it still loads the model): the flag is set here and handed to the service.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if matches!(cli.command, Command::Watch { .. }) {
        if let Err(e) = ctsentinel::service::run::stop_on_signals(&stop) {
            eprintln!("internal error: installing the SIGTERM/SIGINT handlers: {e}");
            return ExitCode::from(EXIT_INTERNAL);
        }
    }
    // The service's configuration is read once, here: it sets the log level (journald keeps
    // the log; commands only warn) and is handed to the service.
    let mut service_config = None;
    let default_level = match &cli.command {
        Command::Watch { config, boards } => {
            let loaded = ctsentinel::service::config::Config::load(config, boards.as_deref());
            let level = loaded
                .as_ref()
                .map(|c| c.log_level.clone())
                .unwrap_or_else(|_| "info".into());
            service_config = Some(loaded);
            level
        }
        _ => "warn".into(),
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level)).init();
    match run(cli, service_config, stop) {
        Ok(code) => code,
        Err(Failure::Input(e)) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::from(EXIT_INPUT)
        }
        Err(Failure::Internal(e)) => {
            eprintln!("internal error: {}", chain(&e));
            ExitCode::from(EXIT_INTERNAL)
        }
    }
}

/// An error and its causes, `: `-separated, leaving out a cause whose text the message before
/// it already ends with (our typed errors print their source; anyhow's `{:#}` would repeat it).
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

enum Failure {
    Input(anyhow::Error),
    Internal(anyhow::Error),
}

/// The service: self-test first (no verdict without it; the self-tested classifier is the one
/// used), then the library's loop until SIGTERM/SIGINT (exit 0).
fn watch(
    cfg: ctsentinel::service::config::Config,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<ExitCode, Failure> {
    use ctsentinel::present::display::Screen;
    use ctsentinel::service::{display_task, run, selftest};
    log::info!(
        "board {}, drop {:?}, state {}",
        cfg.board.name,
        cfg.drop,
        cfg.state.display()
    );
    if cfg.dicom.is_some() {
        // The receiver's folder is ours (under the state folder): the self-test checks it
        // like any drop folder, so it must exist first.
        let received = cfg.layout().received();
        std::fs::create_dir_all(&received)
            .with_context(|| format!("cannot create {}", received.display()))
            .map_err(Failure::Internal)?;
    }
    let (w, h) = (cfg.board.display.width, cfg.board.display.height);
    let display = display_task::spawn(display_task::backend(&cfg), w, h);
    display.show(Screen::Booting);
    let (report, classifier) = selftest::run_configured_keeping(&cfg, &run::StatVfs);
    eprint!("{}", present::selftest_summary(&report));
    let classifier = match classifier {
        Some(c) if report.passed => c,
        _ => {
            let failed: Vec<String> = report
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            display.show(Screen::SelfTestFailed {
                reason: failed.join("; "),
            });
            // The failure must reach the screen before the process ends.
            display.flush(std::time::Duration::from_secs(2));
            return Err(Failure::Internal(anyhow::anyhow!(
                "self-test failed; not starting (no verdict may be shown)"
            )));
        }
    };
    // The receiver starts only after the self-test passed: nothing is acknowledged by a box
    // that could not process it. It stops (and joins) when dropped, after the service loop.
    let receiver = match &cfg.dicom {
        Some(d) => Some(
            ctsentinel::dicom_net::Receiver::start(
                d,
                &cfg.layout().received(),
                cfg.min_free_bytes,
                Box::new(|p: &std::path::Path| run::FreeSpace::free_bytes(&run::StatVfs, p)),
            )
            .with_context(|| format!("starting the DICOM receiver on {}", d.listen))
            .map_err(Failure::Internal)?,
        ),
        None => None,
    };
    let sender = match &cfg.send_to {
        Some(to) => Some(
            ctsentinel::service::sender::Sender::start(to.clone(), cfg.layout().outbox())
                .with_context(|| format!("starting the DICOM sender to {}", to.address))
                .map_err(Failure::Internal)?,
        ),
        None => None,
    };
    // The results page starts after the self-test too; it shows the report the box started with.
    // A page that cannot start (port taken, unreadable certificate) is logged and left off: the
    // bedside verdicts do not depend on it.
    let web = cfg.web.as_ref().and_then(|w| {
        let site = ctsentinel::service::web::Site {
            state: cfg.state.clone(),
            model: classifier.identity(),
            threshold: classifier.card().output.threshold,
            selftest: report.clone(),
            display: Some(display.clone()),
        };
        ctsentinel::service::web::WebServer::start(w, site)
            .map_err(|e| log::error!("the results page on {} did not start: {e}", w.listen))
            .ok()
    });
    let mut service = run::Service::new(cfg, classifier, run::StatVfs, display, stop.clone())
        .context("starting the service")
        .map_err(Failure::Internal)?;
    if let Some(w) = &web {
        service = service.with_web_fingerprint(&w.fingerprint);
    }
    run::run(service, stop);
    drop(web);
    drop(receiver);
    drop(sender);
    Ok(ExitCode::SUCCESS)
}

/// One line from standard input; at a terminal, asked for on standard error and not echoed.
fn read_password() -> std::io::Result<String> {
    use rustix::termios::{isatty, tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    let mut line = String::new();
    if !isatty(&stdin) {
        stdin.read_line(&mut line)?;
        return Ok(line);
    }
    let before = tcgetattr(&stdin)?;
    let mut quiet = before.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    eprint!("Password for the results page (not shown): ");
    tcsetattr(&stdin, OptionalActions::Now, &quiet)?;
    let read = stdin.read_line(&mut line);
    tcsetattr(&stdin, OptionalActions::Now, &before)?;
    eprintln!();
    read.map(|_| line)
}

/// Write to stdout; a reader that went away (`| head`) ends the output quietly instead of
/// panicking the way `print!` does on a closed pipe.
fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("cannot write the output: {e}");
        }
    }
}

fn to_json<T: serde::Serialize>(report: &T) -> Result<String, Failure> {
    serde_json::to_string_pretty(report)
        .context("serialising report")
        .map_err(Failure::Internal)
}

type LoadedConfig = Result<ctsentinel::service::config::Config, ctsentinel::service::config::ConfigError>;

fn run(
    cli: Cli,
    service_config: Option<LoadedConfig>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Select { dir, json } => {
            let report = pipeline::select_folder(&dir)
                .with_context(|| format!("cannot select slices in {}", dir.display()))
                .map_err(Failure::Input)?;
            if json {
                emit(&format!("{}\n", to_json(&report)?));
            } else {
                emit(&present::select_table(&report));
            }
            Ok(if report.any_rejected() {
                ExitCode::from(EXIT_INPUT)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Scan {
            dir,
            json,
            out,
            sr,
            report: sheet,
            model,
        } => {
            // The model loads while the folder is read and its slices selected (the selection
            // needs no model); a model that cannot be loaded is still the error reported first.
            let loading = model.load_in_background();
            let mut progress = |p: pipeline::Progress<'_>| {
                log::debug!("{p:?}");
                std::ops::ControlFlow::Continue(())
            };
            let found = ctsentinel::ingest::find(&dir);
            let selected = found
                .as_ref()
                .ok()
                .map(|f| pipeline::select_all(&f.series, &mut progress));
            let mut classifier = loading
                .join()
                .map_err(|_| Failure::Internal(anyhow::anyhow!("the model loader panicked")))?
                .map_err(Failure::Internal)?;
            let found = found
                .with_context(|| format!("cannot scan {}", dir.display()))
                .map_err(Failure::Input)?;
            let report = selected
                .expect("selected whenever the folder was read")
                .and_then(|sel| {
                    pipeline::classify_discovery(
                        &found,
                        sel,
                        &ctsentinel::ingest::name_of(&dir),
                        &mut classifier,
                        &mut progress,
                    )
                })
                .with_context(|| format!("cannot scan {}", dir.display()))
                .map_err(Failure::Input)?;
            if let Some(sr) = &sr {
                let files: Vec<PathBuf> = found.series.iter().flat_map(|s| s.files.iter().cloned()).collect();
                let sources = ctsentinel::ingest::dicom::sources(&files);
                present::sr::write(sr, &report, &sources, &present::sr::now())
                    .with_context(|| format!("cannot write the SR {}", sr.display()))
                    .map_err(Failure::Input)?;
            }
            if let Some(sheet) = &sheet {
                let time = present::sheet::now_text();
                let input = present::sheet::SheetInput {
                    report: &report,
                    threshold: classifier.card().output.threshold,
                    time: &time,
                };
                let mut decoder = ctsentinel::ingest::SliceDecoder::new();
                present::sheet::write(sheet, &input, &mut |si, k| {
                    let path = pipeline::slice_path(&found.series, &report, si, k)?;
                    let s = decoder.decode(path).ok()?;
                    Some(present::sheet::tile(
                        &report,
                        si,
                        k,
                        input.threshold,
                        s.pixels,
                        s.width,
                        s.height,
                    ))
                })
                .with_context(|| format!("cannot write the report sheet {}", sheet.display()))
                .map_err(Failure::Input)?;
            }
            let text = to_json(&report)?;
            if let Some(out) = &out {
                ctsentinel::fsys::write_atomic(out, format!("{text}\n").as_bytes())
                    .with_context(|| format!("cannot write {}", out.display()))
                    .map_err(Failure::Internal)?;
            }
            if json {
                emit(&format!("{text}\n"));
            } else {
                emit(&present::scan_summary(&report));
            }
            let rejected = report.series.iter().any(|s| s.rejected.is_some());
            Ok(if rejected {
                ExitCode::from(EXIT_INPUT)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Validate {
            labels,
            json,
            report,
            record,
            model,
        } => {
            let rows = ctsentinel::validate::read_labels(&labels)
                .context("cannot read the labels")
                .map_err(Failure::Input)?;
            let mut classifier = model.load().map_err(Failure::Internal)?;
            let r = ctsentinel::validate::run(&labels, &rows, &mut classifier);
            if let Some(png) = &report {
                present::validation::write(png, &r)
                    .with_context(|| format!("cannot write the report {}", png.display()))
                    .map_err(Failure::Input)?;
            }
            if let Some(dir) = &record {
                let path = ctsentinel::validate::write_record(dir, &r)
                    .with_context(|| format!("cannot write the validation record in {}", dir.display()))
                    .map_err(Failure::Input)?;
                log::info!("validation record kept: {}", path.display());
            }
            if json {
                emit(&format!("{}\n", to_json(&r)?));
            } else {
                emit(&present::validation::summary(&r));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Selftest(args) => {
            let json = args.json;
            let report = match &args.config {
                Some(path) => {
                    let cfg = ctsentinel::service::config::Config::load(path, None)
                        .context("invalid configuration")
                        .map_err(Failure::Input)?;
                    ctsentinel::service::selftest::run_configured(&cfg, &ctsentinel::service::run::StatVfs)
                }
                None => ctsentinel::service::selftest::run(&args.model.path(), args.model.options()),
            };
            if json {
                emit(&format!("{}\n", to_json(&report)?));
            } else {
                emit(&present::selftest_summary(&report));
            }
            Ok(if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_INTERNAL)
            })
        }
        Command::Watch { config, boards } => {
            let cfg = match service_config {
                Some(loaded) => loaded,
                None => ctsentinel::service::config::Config::load(&config, boards.as_deref()),
            };
            watch(cfg.context("invalid configuration").map_err(Failure::Input)?, stop)
        }
        Command::SetPassword { config, boards } => {
            let cfg = ctsentinel::service::config::Config::load(&config, boards.as_deref())
                .context("invalid configuration")
                .map_err(Failure::Input)?;
            let line = read_password()
                .context("reading the password from standard input")
                .map_err(Failure::Input)?;
            let path = ctsentinel::service::web::set_password(&cfg.state, &line)
                .context("the password was not set")
                .map_err(Failure::Input)?;
            emit(&format!(
                "password set ({}); restart the service for the page to use it\n",
                path.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::DisplayDemo { backend, out } => {
            use ctsentinel::present::display;
            if backend != "png" {
                return Err(Failure::Input(anyhow::anyhow!(
                    "display-demo renders PNG files only (--backend png)"
                )));
            }
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))
                .map_err(Failure::Input)?;
            for screen in display::sample_screens() {
                for (w, h) in [(320, 240), (800, 480)] {
                    let path = out.join(format!("{}_{w}x{h}.png", screen.name()));
                    display::save_png(&display::render(&screen, w, h), &path)
                        .map_err(|e| Failure::Internal(e.into()))?;
                    emit(&format!("{}\n", path.display()));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Classify { images, json, model } => {
            let mut classifier = model.load().map_err(Failure::Internal)?;
            let report = pipeline::classify_images(&images, &mut classifier);
            if json {
                emit(&format!("{}\n", to_json(&report)?));
            } else {
                emit(&present::classify_table(&report));
            }
            Ok(if report.any_failed() {
                ExitCode::from(EXIT_INPUT)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
