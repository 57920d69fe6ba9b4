//! The command line (SPEC §1): parses arguments, runs the command, and maps
//! the outcome to the exit status: 0 success, 1 runtime failure, 2 usage or
//! configuration error. Errors are one clear sentence on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::client::AdminClient;
use crate::config;

#[derive(Debug, Parser)]
#[command(
    name = "strangler",
    version,
    about = "Move an HTTP service to a rewrite, endpoint by endpoint, safely"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Where client commands find the admin API.
#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// Admin API base URL.
    #[arg(long, env = "STRANGLER_ADMIN", default_value = "http://127.0.0.1:9090")]
    admin: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy and the admin listener until SIGINT/SIGTERM.
    Run {
        #[arg(short, long)]
        config: PathBuf,
        /// This instance's id (default: host name and proxy port).
        #[arg(long)]
        instance_id: Option<String>,
    },
    /// Validate a configuration file: exit 0 when valid, 2 with every error.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// A self-contained tour on loopback.
    Demo {
        #[arg(long)]
        keep: bool,
    },
    /// A table of routes with their stage, weight and counters.
    Status(AdminArgs),
    /// Move a route to its next rollout step.
    Promote {
        route: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Send a route back to shadow, weight 0.
    Rollback {
        route: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Stop automatic promotion of a route (rollback gates keep running).
    Pause {
        route: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Resume a paused or rolled-back route.
    Resume {
        route: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Pin the candidate share of a route (0–100) and pause its automation.
    Weight {
        route: String,
        percent: f64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Forget the route's live state and start again from the file's stage and weight.
    Reset {
        route: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Parses the arguments, runs the command and returns the exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("strangler: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(dispatch(cli.command))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRANGLER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Run {
            config,
            instance_id,
        } => match crate::app::run(config, instance_id).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("strangler: {error:#}");
                if error.is::<crate::app::ConfigFailure>() {
                    ExitCode::from(2)
                } else {
                    ExitCode::from(1)
                }
            }
        },
        Command::Check { config } => check(&config),
        Command::Demo { .. } => {
            eprintln!("strangler: the demo is not built yet; see README.md to run the proxy with a configuration");
            ExitCode::from(1)
        }
        Command::Status(admin) => client_call(&admin, status(&admin)).await,
        Command::Promote { route, admin } => {
            client_call(&admin, action(&admin, &route, "promote", None)).await
        }
        Command::Rollback { route, admin } => {
            client_call(&admin, action(&admin, &route, "rollback", None)).await
        }
        Command::Pause { route, admin } => {
            client_call(&admin, action(&admin, &route, "pause", None)).await
        }
        Command::Resume { route, admin } => {
            client_call(&admin, action(&admin, &route, "resume", None)).await
        }
        Command::Reset { route, admin } => {
            client_call(&admin, action(&admin, &route, "reset", None)).await
        }
        Command::Weight {
            route,
            percent,
            admin,
        } => {
            if !(0.0..=100.0).contains(&percent) {
                eprintln!("strangler: {percent} is not a percentage (0–100)");
                return ExitCode::from(2);
            }
            let body = serde_json::json!({ "weight": percent });
            client_call(&admin, action(&admin, &route, "weight", Some(body))).await
        }
    }
}

/// `strangler check`: every error, each naming file, line, column and key path.
fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path, &config::ProcessEnv) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
            println!(
                "{}: valid ({} upstreams, {} routes)",
                path.display(),
                loaded.config.upstreams.len(),
                loaded.config.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("error: {error}");
            }
            ExitCode::from(2)
        }
    }
}

fn admin_client(admin: &AdminArgs) -> AdminClient {
    AdminClient::new(&admin.admin, std::env::var("STRANGLER_ADMIN_TOKEN").ok())
}

async fn client_call(
    _admin: &AdminArgs,
    call: impl std::future::Future<Output = Result<String, crate::client::ClientError>>,
) -> ExitCode {
    match call.await {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("strangler: {error}");
            ExitCode::from(1)
        }
    }
}

async fn action(
    admin: &AdminArgs,
    route: &str,
    verb: &str,
    body: Option<serde_json::Value>,
) -> Result<String, crate::client::ClientError> {
    let route_json = admin_client(admin)
        .post(&format!("/api/routes/{route}/{verb}"), body)
        .await?;
    Ok(format!(
        "{}: stage {}, weight {}, state {}",
        route,
        route_json["stage"].as_str().unwrap_or("?"),
        route_json["weight"],
        route_json["state"].as_str().unwrap_or("?")
    ))
}

async fn status(admin: &AdminArgs) -> Result<String, crate::client::ClientError> {
    let routes = admin_client(admin).get("/api/routes").await?;
    let mut out = format!(
        "{:<16} {:<10} {:>7} {:<12} {:>9} {:>7} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>8}\n",
        "ROUTE",
        "STAGE",
        "WEIGHT",
        "STATE",
        "L.REQ",
        "L.ERR",
        "L.P50",
        "L.P99",
        "C.REQ",
        "C.ERR",
        "C.P50",
        "C.P99",
        "MATCH"
    );
    let ms = |v: &serde_json::Value| {
        v.as_f64()
            .map_or_else(|| "–".to_string(), |v| format!("{v:.2}ms"))
    };
    for r in routes.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<16} {:<10} {:>7} {:<12} {:>9} {:>7} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>8}\n",
            r["name"].as_str().unwrap_or("?"),
            r["stage"].as_str().unwrap_or("?"),
            r["weight"],
            r["state"].as_str().unwrap_or("?"),
            r["legacy"]["requests"],
            r["legacy"]["errors"],
            ms(&r["legacy"]["p50_ms"]),
            ms(&r["legacy"]["p99_ms"]),
            r["candidate"]["requests"],
            r["candidate"]["errors"],
            ms(&r["candidate"]["p50_ms"]),
            ms(&r["candidate"]["p99_ms"]),
            r["shadow"]["match_rate"]
                .as_f64()
                .map_or_else(|| "–".to_string(), |v| format!("{:.2}%", v * 100.0)),
        ));
    }
    Ok(out.trim_end().to_string())
}
