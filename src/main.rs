//! The `callhook` binary: arguments → logging → the library → exit code.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse_from(cli::args());
    logging(&cli);
    match cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("callhook: {}", message(&error));
            ExitCode::FAILURE
        }
    }
}

/// Log lines on stderr, as `--log-format` and `--color` say; `CALLHOOK_LOG` filters.
fn logging(cli: &cli::Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CALLHOOK_LOG")
        // The demo shows what happens itself; its log would only repeat it.
        .unwrap_or_else(|_| {
            if matches!(cli.command, cli::Command::Demo(_)) {
                "warn"
            } else {
                "info"
            }
            .into()
        });
    // Colour only on a terminal, and never when NO_COLOR is set (no-color.org), unless
    // asked for.
    let color = match cli.color {
        cli::ColorArg::Always => true,
        cli::ColorArg::Never => false,
        cli::ColorArg::Auto => {
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false);
    match cli.log_format {
        cli::LogFormat::Json => builder.json().with_current_span(false).init(),
        cli::LogFormat::Text => builder.with_ansi(color).without_time().init(),
    }
}

/// The error and its causes, joined by `: `, each said once (many errors already name
/// their cause in their own message).
fn message(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
