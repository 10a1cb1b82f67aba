//! Command-line arguments (clap derive types only) and the commands they run.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use jiff::civil::Date;
use jiff::tz::TimeZone;

use std::path::PathBuf;

use callhook::config::Config;
use callhook::daemon::{self, Output};
use callhook::discover::{self, Places};
use callhook::forward::Forwarded;
use callhook::parse::hook::HookEvent;
use callhook::replay::input::{Format, InputPath, ReadOptions};
use callhook::replay::{self, FormatChoice, Input, ReplayOptions};
use callhook::source::config::{Source, StartAt};

/// Call events from the MicroSIP softphone's files.
#[derive(Debug, Parser)]
#[command(name = "callhook", version, about)]
pub struct Cli {
    /// Colour in log lines: `auto` (on a terminal, unless NO_COLOR is set), `always`
    /// or `never`.
    #[arg(long, value_enum, global = true, default_value_t = ColorArg::Auto)]
    pub color: ColorArg,
    /// Log lines (stderr) as `text` for people or `json`, one object a line, for log
    /// collectors.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read whole files (SIP traces, call-log CSVs, microsip.ini) and print the call
    /// events `callhook run` would emit as NDJSON on stdout.
    ///
    /// Several files are merged in event-time order and correlated as `run` does: a
    /// call seen in a trace and a CSV is one call, each event once, with the trace's
    /// data. A one-line summary (lines, calls, events, errors, MB/s) goes to stderr, and
    /// so does each unreadable part, with file and line. Exit status 1 when an input
    /// could not be read at all.
    Replay(ReplayArgs),
    /// Watch traces live and emit each call event as it happens.
    ///
    /// With no -c, --trace or --microsip-dir: a configuration file from the places -c
    /// lists, else MicroSIP's own MicroSIP_log.txt and microsip.ini (the installer's
    /// %LOCALAPPDATA%\MicroSIP and %APPDATA%\MicroSIP, a running portable
    /// microsip.exe's folder), watched together, events on stdout; stderr says what was
    /// found, or where it looked.
    ///
    /// Progress is kept in a SQLite database in the state directory, so a restart
    /// (or a crash) goes on where it stopped, without losing or repeating events.
    /// Stops cleanly on Ctrl-C or SIGTERM.
    Run(RunArgs),
    /// Show the live pipeline at work on a built-in MicroSIP trace (no set-up needed).
    Demo(DemoArgs),
    /// Check a configuration file (and its included rule files) without running it.
    ///
    /// Lists every problem with file, line and column; exit status 1 if there is any.
    Check(CheckArgs),
    /// Dry-run the rules on recorded events (NDJSON), traces, call-log CSVs or
    /// microsip.ini: which rules fire, with the rendered webhook or command, and why the
    /// others do not. Several files are correlated as `run` does. Sends nothing.
    Test(TestArgs),
    /// Inspect and act on the outbox: jobs waiting, retrying, delivered, dead.
    Outbox(OutboxArgs),
    /// Hand one MicroSIP call event to the running daemon, for MicroSIP's `cmd...`
    /// settings (see the README for the exact lines).
    ///
    /// Returns within milliseconds: the event goes to `callhook run` over loopback, or
    /// waits in the state directory's spool when no daemon runs (it takes it up when it
    /// starts). A copy of this program named `callhook-EVENT` (e.g. `callhook-ring.exe`)
    /// runs `callhook hook EVENT` with its arguments, for settings that take a program
    /// without arguments.
    Hook(HookArgs),
    /// Print a completion script for a shell (bash, zsh, fish, powershell, elvish),
    /// e.g. `callhook completions bash > /etc/bash_completion.d/callhook`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `callhook man | man -l -`.
    Man,
    /// Set another program up for callhook.
    #[command(subcommand)]
    Setup(SetupCommand),
    /// Start `callhook run -c CONFIG` at every login, without a console window, logging
    /// to state_dir/callhook.log (Windows: the per-user Run key; elsewhere a systemd
    /// user unit).
    Install {
        /// Configuration file (default: callhook.yaml next to this program).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Stop starting callhook at login (undoes `install`).
    Uninstall,
    /// Whether callhook starts at login and runs and, with a configuration, what its
    /// state database says: sources with offsets and lag, the outbox by state, the
    /// last delivery errors, disabled endpoints (read-only: safe beside a running
    /// daemon).
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Configuration file whose state database to read (default: callhook.yaml next
    /// to this program, when there is one).
    #[arg(short, long, value_name = "FILE", env = "CALLHOOK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the status as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SetupCommand {
    /// Switch MicroSIP's log on (`enableLog=1`) in its microsip.ini and, with --hooks,
    /// its command hooks (`cmdCallRing=...callhook-ring.exe`, ...), keeping every other
    /// byte; a backup is kept beside it. Close MicroSIP first: it rewrites the file on
    /// exit.
    Microsip {
        /// The ini to edit (default: %APPDATA%\MicroSIP\microsip.ini, the installer's;
        /// the portable build keeps it next to microsip.exe).
        #[arg(long, value_name = "PATH")]
        ini: Option<PathBuf>,
        /// Also point MicroSIP's command hooks at callhook-EVENT copies of this program
        /// (made beside it).
        #[arg(long)]
        hooks: bool,
        /// Put back what setup changed (the other keys, and MicroSIP's later changes,
        /// stay).
        #[arg(long)]
        undo: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct HookArgs {
    /// incoming, ring, outgoing, answer, start, busy or end (or the MicroSIP setting's
    /// name: cmdIncomingCall, cmdCallRing, cmdOutgoingCall, cmdCallAnswer, cmdCallStart,
    /// cmdCallBusy, cmdCallEnd).
    #[arg(value_parser = parse_hook_event)]
    pub event: HookEvent,
    /// The number MicroSIP passes (a SIP URI is reduced to its user part).
    #[arg(allow_hyphen_values = true)]
    pub number: String,
    /// The caller's name, when known.
    #[arg(allow_hyphen_values = true)]
    pub name: Option<String>,
    /// Configuration file (only its state_dir is read). Default: as `run` looks for one
    /// ($CALLHOOK_CONFIG, callhook.yaml next to this program, the user's), else the
    /// platform's state folder (as `run --trace` and `run` without a configuration use).
    #[arg(short, long, value_name = "FILE", env = "CALLHOOK_CONFIG")]
    pub config: Option<PathBuf>,
    /// The state directory, instead of a configuration file.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub state_dir: Option<PathBuf>,
}

fn parse_hook_event(text: &str) -> Result<HookEvent, String> {
    text.parse()
        .map_err(|e: callhook::parse::hook::UnknownHookEvent| e.to_string())
}

/// The command line, with `callhook-EVENT ARGS` (a copy of the program named after a
/// hook event, for MicroSIP settings that take a program without arguments) read as
/// `callhook hook EVENT ARGS`.
pub fn args() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let event = args
        .first()
        .and_then(|program| std::path::Path::new(program).file_stem())
        .and_then(|stem| stem.to_str())
        .and_then(|stem| stem.to_ascii_lowercase().strip_prefix("callhook-").map(str::to_owned))
        .filter(|event| event.parse::<HookEvent>().is_ok());
    if let Some(event) = event {
        args.splice(1..1, ["hook".into(), event.into()]);
    }
    args
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("state").required(true).args(["config", "state_dir"])))]
pub struct OutboxArgs {
    /// Configuration file (its state_dir is used).
    #[arg(short, long, value_name = "FILE", global = true, env = "CALLHOOK_CONFIG")]
    pub config: Option<PathBuf>,
    /// The state directory, instead of a configuration file.
    #[arg(long, value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: OutboxCommand,
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List jobs (default: dead ones).
    List {
        /// Which jobs: waiting or retrying (`pending`), delivered (`done`), given up
        /// (`dead`), or `all`.
        #[arg(long, value_enum, default_value_t = StatusArg::Dead)]
        status: StatusArg,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One job: its state and the request or command it holds (secrets as the
    /// references they stand for, never their values).
    Show {
        #[arg(value_name = "ID")]
        id: i64,
    },
    /// Try jobs again now: the given ids, or all dead jobs.
    Retry {
        #[arg(value_name = "ID")]
        ids: Vec<i64>,
        /// Every dead job.
        #[arg(long, conflicts_with = "ids")]
        all_dead: bool,
    },
    /// Delete jobs: the given ids, or all dead jobs.
    Drop {
        #[arg(value_name = "ID")]
        ids: Vec<i64>,
        #[arg(long, conflicts_with = "ids")]
        all_dead: bool,
    },
    /// Counts per rule: waiting, retrying, delivered, dead.
    Stats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Pending,
    Done,
    Dead,
    All,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Configuration file.
    #[arg(short, long, value_name = "FILE", env = "CALLHOOK_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Configuration file.
    #[arg(short, long, value_name = "FILE", env = "CALLHOOK_CONFIG")]
    pub config: PathBuf,
    #[command(flatten)]
    pub read: ReadArgs,
    /// NDJSON event files, SIP traces, call-log CSVs or microsip.ini; `-` reads stdin.
    #[arg(required = true, value_name = "FILE")]
    pub inputs: Vec<String>,
}

/// How `replay` and `test` read their files.
#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// Input format: `auto` (default) recognises a PJSIP log by its timestamped lines,
    /// a microsip.ini by its [Calls] section, a call-log CSV by its header, NDJSON
    /// events by a leading `{`. Give it once for every file, or once per file in the
    /// files' order.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Vec<FormatArg>,
    /// Date of a trace's first line when its lines carry none (YYYY-MM-DD).
    /// Default: the file's modification date (today for stdin).
    #[arg(long, value_parser = parse_date)]
    pub date: Option<Date>,
    /// IANA time zone of the files' local times (default: this machine's).
    #[arg(long, value_parser = parse_time_zone)]
    pub tz: Option<TimeZone>,
    /// Take an inbound caller's number and name from P-Asserted-Identity or
    /// Remote-Party-ID when present, instead of From.
    #[arg(long)]
    pub prefer_asserted_identity: bool,
}

impl ReadArgs {
    /// The inputs, each with its format; an error when `--format` was given neither
    /// once nor once per file.
    fn inputs(&self, files: &[String]) -> anyhow::Result<Vec<Input>> {
        let formats = &self.format;
        if formats.len() > 1 && formats.len() != files.len() {
            anyhow::bail!(
                "--format given {} times for {} files: give it once for all, or once per file",
                formats.len(),
                files.len()
            );
        }
        Ok(files
            .iter()
            .enumerate()
            .map(|(index, file)| Input {
                path: InputPath::from_arg(file),
                format: formats
                    .get(index)
                    .or(formats.first())
                    .map_or(FormatChoice::Auto, |f| f.choice()),
            })
            .collect())
    }

    fn options(&self, window: std::time::Duration) -> ReplayOptions {
        ReplayOptions {
            read: ReadOptions {
                date: self.date,
                time_zone: self.tz.clone().unwrap_or_else(TimeZone::system),
                prefer_asserted_identity: self.prefer_asserted_identity,
            },
            window,
            progress: progress_bar(),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Play the trace this many times faster than it was recorded.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Events as NDJSON on stdout (the default when stdout is not a terminal); the
    /// rest goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Keep running after the recorded calls, until Ctrl-C.
    #[arg(long)]
    pub follow: bool,
    /// Serve the status page (with /metrics and /healthz) on 127.0.0.1 during the
    /// demo, print its URL and open it in the browser on a terminal; it stays up after
    /// the summary until Ctrl-C.
    #[arg(long)]
    pub status_page: bool,
    /// The demo's screen pop (what its `screen-pop` rule runs): print the caller given
    /// after `--` and exit.
    #[arg(long, hide = true)]
    pub popup: bool,
    #[arg(last = true, hide = true)]
    pub caller: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Configuration file (YAML; see the README). Without -c, --trace or
    /// --microsip-dir: $CALLHOOK_CONFIG, else callhook.yaml next to this program, else
    /// the user's (%APPDATA%\callhook\callhook.yaml; ~/.config/callhook/callhook.yaml),
    /// else MicroSIP's own files where MicroSIP keeps them.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Quick start without a configuration file: watch this SIP trace.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "microsip_dir"])]
    pub trace: Option<PathBuf>,
    /// Without a configuration file: watch MicroSIP_log.txt and microsip.ini in this
    /// folder (portable MicroSIP keeps them beside microsip.exe) instead of looking.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub microsip_dir: Option<PathBuf>,
    /// Without a configuration file: where to keep state (default: the platform's local
    /// state folder, e.g. %LOCALAPPDATA%\callhook or ~/.local/state/callhook).
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub state_dir: Option<PathBuf>,
    /// Without a configuration file: read a file seen for the first time from its
    /// `end` (default) or its `beginning`.
    #[arg(long, value_enum, conflicts_with = "config")]
    pub start_at: Option<StartAtArg>,
    /// Without a configuration file: also take events from `callhook hook` (MicroSIP's
    /// command hooks; found MicroSIP files take them when its ini points them at callhook).
    #[arg(long, conflicts_with = "config")]
    pub hooks: bool,
    /// Print each event as a JSON line on stdout (always without a configuration file
    /// and --trace).
    #[arg(long)]
    pub stdout: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StartAtArg {
    End,
    Beginning,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub read: ReadArgs,
    /// Events of one number within this long are one call when a source knows no
    /// Call-ID (as `correlate.window`; e.g. `10s`).
    #[arg(long, value_name = "DURATION", value_parser = parse_window, default_value = "10s")]
    pub window: std::time::Duration,
    /// Do not print the summary line.
    #[arg(long, short)]
    pub quiet: bool,
    /// SIP traces, call-log CSVs or microsip.ini; `-` reads stdin.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Auto,
    #[value(name = "sip_trace")]
    SipTrace,
    #[value(name = "call_log")]
    CallLog,
    History,
    /// NDJSON events (`test` only; `replay` prints them as they are).
    Events,
}

impl FormatArg {
    fn choice(self) -> FormatChoice {
        match self {
            FormatArg::Auto => FormatChoice::Auto,
            FormatArg::SipTrace => FormatChoice::Fixed(Format::SipTrace),
            FormatArg::CallLog => FormatChoice::Fixed(Format::CallLog),
            FormatArg::History => FormatChoice::Fixed(Format::History),
            FormatArg::Events => FormatChoice::Fixed(Format::Events),
        }
    }
}

/// A progress bar of bytes on stderr, only when stderr is a terminal (piped or
/// redirected, nothing is drawn).
fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::IsTerminal::is_terminal(&io::stderr()) {
        return None;
    }
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
    )
    .ok()?;
    Some(indicatif::ProgressBar::new(0).with_style(style))
}

fn parse_window(text: &str) -> Result<std::time::Duration, String> {
    callhook::duration::parse_duration(text)
}

fn parse_date(text: &str) -> Result<Date, String> {
    text.parse::<Date>().map_err(|e| format!("expected YYYY-MM-DD: {e}"))
}

fn parse_time_zone(text: &str) -> Result<TimeZone, String> {
    TimeZone::get(text).map_err(|e| format!("unknown time zone {text:?}: {e}"))
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Replay(args) => run_replay(args),
        Command::Run(args) => run_daemon(args),
        Command::Check(args) => run_check(&args),
        Command::Test(args) => run_test(args),
        Command::Outbox(args) => run_outbox(args),
        Command::Hook(args) => run_hook(args),
        Command::Install { config } => {
            let program = std::env::current_exe()?;
            let config = config.unwrap_or_else(|| program.with_file_name("callhook.yaml"));
            let config = std::path::absolute(&config)?;
            let lines = callhook::install::install(&callhook::install::Install { config, program })?;
            lines.iter().for_each(|line| println!("{line}"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Uninstall => {
            callhook::install::uninstall()?
                .iter()
                .for_each(|line| println!("{line}"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => run_status(args),
        Command::Setup(SetupCommand::Microsip { ini, hooks, undo }) => {
            let setup = callhook::setup::MicroSipSetup {
                ini: ini.map_or_else(callhook::setup::default_ini, Ok)?,
                hooks,
                undo,
                program: std::env::current_exe()?,
            };
            let changes = callhook::setup::run(&setup)?;
            println!(
                "{}: {}",
                setup.ini.display(),
                if changes.is_empty() {
                    "nothing to change"
                } else {
                    "changed"
                }
            );
            changes.iter().for_each(|change| println!("  {change}"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "callhook", &mut io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command).render(&mut io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => run_demo(args),
    }
}

/// `callhook check`: every problem of the configuration and its rule files, one block
/// each and a count, exit 1; else what was loaded, with warnings.
fn run_check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(callhook::config::ConfigError::Invalid { problems, .. }) => {
            for problem in &problems {
                eprintln!("{}\n", problem.block());
            }
            eprintln!("{}", callhook::problem::summary(&problems));
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => return Err(error.into()),
    };
    // Warnings: what loads but would go wrong at run time or at the receiver.
    for warning in config.rules.warnings() {
        eprintln!("warning: {warning}");
    }
    println!(
        "{}: ok ({} source{}, {} rule{}{})",
        args.config.display(),
        config.sources.len(),
        if config.sources.len() == 1 { "" } else { "s" },
        config.rules.len(),
        if config.rules.len() == 1 { "" } else { "s" },
        if config.rules.is_empty() {
            String::new()
        } else {
            format!(": {}", config.rules.names().collect::<Vec<_>>().join(", "))
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn run_demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.popup {
        println!("{}", callhook::demo::popup(&args.caller));
        return Ok(ExitCode::SUCCESS);
    }
    let options = callhook::demo::DemoOptions {
        speed: args.speed,
        json: args.json || !std::io::IsTerminal::is_terminal(&io::stdout()),
        follow: args.follow,
        status_page: args.status_page,
    };
    runtime()?.block_on(callhook::demo::run(options, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

fn run_status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    // Whether it starts at login; a platform without the tools for it still reports the rest.
    let install = callhook::install::status().unwrap_or_else(|e| vec![format!("install status unknown: {e}")]);
    let config = args.config.or_else(|| {
        let beside = std::env::current_exe().ok()?.with_file_name("callhook.yaml");
        beside.is_file().then_some(beside)
    });
    let report = match &config {
        Some(path) => Some(callhook::status::report::report(path, &Config::load(path)?)?),
        None => None,
    };
    if args.json {
        let value = serde_json::json!({ "install": install, "state": report });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        install.iter().for_each(|line| println!("{line}"));
        match &report {
            Some(report) => println!("{report}"),
            None => println!("no configuration (give -c FILE or CALLHOOK_CONFIG to see its state)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_daemon(args: RunArgs) -> anyhow::Result<ExitCode> {
    let start_at = args.start_at.map(|at| match at {
        StartAtArg::End => StartAt::End,
        StartAtArg::Beginning => StartAt::Beginning,
    });
    let (config, stdout) = match (&args.config, &args.trace) {
        (Some(path), _) => (Config::load(path)?, args.stdout),
        (None, Some(trace)) => {
            let mut source = Source::sip_trace(trace);
            source.start_at = start_at.unwrap_or_default();
            let state_dir = match &args.state_dir {
                Some(dir) => dir.clone(),
                None => default_state_dir()?,
            };
            let mut sources = vec![source];
            if args.hooks {
                sources.push(Source::hook(&state_dir));
            }
            (Config::with_sources(state_dir, sources), args.stdout)
        }
        (None, None) => {
            let request = discover::RunRequest {
                microsip_dir: args.microsip_dir.clone(),
                state_dir: args.state_dir.clone(),
                start_at,
                hooks: args.hooks,
            };
            let plan = discover::plan(&Places::of_this_machine().with_running_microsip(), &request)?;
            plan.notes.iter().for_each(|note| eprintln!("callhook: {note}"));
            (plan.config, args.stdout || plan.zero_config)
        }
    };
    let output = if stdout { Output::Stdout } else { Output::None };
    let runtime = runtime()?;
    tracing::info!(state_dir = %config.state_dir.display(), sources = config.sources.len(), "callhook running");
    runtime.block_on(daemon::run(config, output, shutdown_signal()))?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn run_hook(args: HookArgs) -> anyhow::Result<ExitCode> {
    let state_dir = match (&args.state_dir, &args.config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(config)) => callhook::config::state_dir_of(config)?,
        (None, None) => match discover::config_file(&Places::of_this_machine()) {
            Some((config, _)) => callhook::config::state_dir_of(&config)?,
            None => default_state_dir()?,
        },
    };
    let message = callhook::forward::message(args.event, &args.number, args.name.as_deref())?;
    match callhook::forward::forward(&state_dir, &message)? {
        Forwarded::Delivered => println!("{} {}: delivered to callhook run", message.event, message.number),
        Forwarded::Spooled(path) => println!(
            "{} {}: spooled for callhook run (not running or not answering): {}",
            message.event,
            message.number,
            path.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `callhook outbox show ID`: one job with the request or command it holds.
fn show_job(
    store: &mut callhook::store::Store,
    id: i64,
    state_dir: &std::path::Path,
    redact: &dyn Fn(&str) -> String,
) -> anyhow::Result<()> {
    let Some(job) = store.job(id)? else {
        anyhow::bail!("no job {id} in {}", state_dir.display());
    };
    let action = callhook::rules::action::Action::from_stored(&job.action, job.body.clone())
        .map(|a| a.describe())
        .unwrap_or_else(|e| format!("(unreadable: {e})"));
    println!(
        "job {} ({}, rule {}, call {}, attempts {})\n  {}{}",
        job.id,
        job.status,
        job.rule,
        job.call_id,
        job.attempts,
        redact(&action),
        job.last_error
            .as_deref()
            .map(|e| format!("\n  last error: {}", redact(e)))
            .unwrap_or_default()
    );
    Ok(())
}

fn run_outbox(args: OutboxArgs) -> anyhow::Result<ExitCode> {
    // With a configuration its secrets are hidden too, in whatever an old job or an
    // error holds.
    let (state_dir, rules) = match (&args.config, &args.state_dir) {
        (_, Some(dir)) => (dir.clone(), None),
        (Some(config), None) => {
            let config = Config::load(config)?;
            (config.state_dir, Some(config.rules))
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let redact = |text: &str| match &rules {
        Some(rules) => rules.redact(text),
        None => text.to_owned(),
    };
    if !state_dir.join(callhook::store::DATABASE_FILE).is_file() {
        anyhow::bail!(
            "no state database in {} (has callhook run there yet?)",
            state_dir.display()
        );
    }
    let mut store = callhook::store::Store::open(&state_dir)?;
    let ids_or_all = |ids: &[i64], all: bool| -> anyhow::Result<Option<Vec<i64>>> {
        match (ids.is_empty(), all) {
            (false, _) => Ok(Some(ids.to_vec())),
            (true, true) => Ok(None),
            (true, false) => anyhow::bail!("give job ids or --all-dead"),
        }
    };
    match args.command {
        OutboxCommand::List { status, limit } => {
            let filter = match status {
                StatusArg::Pending => Some("pending"),
                StatusArg::Done => Some("done"),
                StatusArg::Dead => Some("dead"),
                StatusArg::All => None,
            };
            let jobs = store.jobs(filter, limit)?;
            for job in &jobs {
                println!(
                    "{:>6}  {:<7} {:<20} attempts {:<2} call {}  {}{}",
                    job.id,
                    job.status,
                    job.rule,
                    job.attempts,
                    job.call_id,
                    job.endpoint,
                    job.last_error
                        .as_deref()
                        .map(|e| format!("\n        last error: {}", redact(e)))
                        .unwrap_or_default()
                );
            }
            eprintln!("{} job(s)", jobs.len());
        }
        OutboxCommand::Show { id } => show_job(&mut store, id, &state_dir, &redact)?,
        OutboxCommand::Retry { ids, all_dead } => {
            let n = store.retry_jobs(ids_or_all(&ids, all_dead)?.as_deref())?;
            println!("{n} job(s) will be tried again by the running daemon (or at its next start)");
        }
        OutboxCommand::Drop { ids, all_dead } => {
            let n = store.drop_jobs(ids_or_all(&ids, all_dead)?.as_deref())?;
            println!("{n} job(s) deleted");
        }
        OutboxCommand::Stats => {
            println!(
                "{:<24} {:>8} {:>8} {:>10} {:>6}",
                "rule", "waiting", "retrying", "delivered", "dead"
            );
            for s in store.job_stats()? {
                println!(
                    "{:<24} {:>8} {:>8} {:>10} {:>6}",
                    s.rule, s.pending, s.retrying, s.done, s.dead
                );
            }
            for disabled in store.disabled_endpoints()? {
                println!(
                    "disabled since {}: {} ({}); `callhook outbox retry` enables it again",
                    disabled.since, disabled.endpoint, disabled.reason
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Completes on Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The platform's folder for local state ([`discover::default_state_dir`]).
fn default_state_dir() -> anyhow::Result<PathBuf> {
    discover::default_state_dir(&Places::of_this_machine())
        .ok_or_else(|| anyhow::anyhow!("no home folder to keep state in; pass --state-dir"))
}

/// Reports replay problems as warnings: the first hundred, then only their count
/// (a broken file can hold millions of bad lines; the summary counts them all).
fn reporter() -> impl FnMut(replay::Problem<'_>) {
    let mut reported = 0u64;
    move |problem| {
        reported += 1;
        if reported <= 100 {
            tracing::warn!("{problem}");
        } else if reported == 101 {
            tracing::warn!("more problems follow; only their count is shown in the summary");
        }
    }
}

fn run_test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let inputs = args.read.inputs(&args.inputs)?;
    let options = args.read.options(config.correlation_window);
    let stdout = io::stdout().lock();
    let mut out = BufWriter::new(stdout);
    let summary = callhook::dry_run::dry_run(config.rules.clone(), &inputs, &options, &mut out, &mut reporter())?;
    out.flush()?;
    eprintln!(
        "test: {} events, {} firings, {} template errors (nothing was sent)",
        summary.events, summary.firings, summary.template_errors
    );
    Ok(if summary.template_errors > 0 || summary.read.failed_inputs > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn run_replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let options = args.read.options(args.window);
    let inputs = args.read.inputs(&args.files)?;
    let stdout = io::stdout().lock();
    let mut out = BufWriter::with_capacity(1 << 16, stdout);
    let summary = match replay::replay(&inputs, &options, &mut out, &mut reporter()) {
        Ok(summary) => summary,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        Err(e) => return Err(anyhow::Error::new(e).context("cannot write events to stdout")),
    };
    match out.flush() {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        other => other.map_err(|e| anyhow::Error::new(e).context("cannot write events to stdout"))?,
    }
    if !args.quiet {
        eprintln!("replay: {summary}");
    }
    Ok(if summary.failed_inputs > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
