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
enum ReportFormat {
    Md,
    Json,
}

/// `strangler roi`: every input is a flag.
#[derive(Debug, clap::Args)]
struct RoiArgs {
    /// Fraction of the infrastructure the rewrite saves (0.3 = 30%).
    #[arg(long, default_value_t = 0.0)]
    performance_gain: f64,
    /// Instances the service runs on.
    #[arg(long, default_value_t = 0.0)]
    instances: f64,
    /// Monthly cost of one instance.
    #[arg(long, default_value_t = 0.0)]
    instance_cost: f64,
    /// Months the comparison covers.
    #[arg(long, default_value_t = 12)]
    months: u32,
    /// Incidents the rewrite avoids over those months.
    #[arg(long, default_value_t = 0.0)]
    incidents_avoided: f64,
    /// Cost of one incident.
    #[arg(long, default_value_t = 0.0)]
    incident_cost: f64,
    /// Productivity gain over those months, in money.
    #[arg(long, default_value_t = 0.0)]
    productivity_gain: f64,
    /// Engineer-months the migration takes.
    #[arg(long, default_value_t = 0.0)]
    engineer_months: f64,
    /// Cost of one engineer-month.
    #[arg(long, default_value_t = 0.0)]
    engineer_month_cost: f64,
    /// Velocity lost while the team learns, in money.
    #[arg(long, default_value_t = 0.0)]
    velocity_loss: f64,
    #[command(flatten)]
    admin: AdminArgs,
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
    /// The latest stored mismatches of a route.
    Diffs {
        route: String,
        #[arg(long, default_value_t = 10)]
        limit: u32,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Mark a known, intended difference as accepted for an endpoint template.
    Accept {
        route: String,
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        path: String,
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Write the route's stored exchanges, redacted, as JSON lines on stdout.
    Export {
        route: String,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The migration report: endpoint ranking, routes, noise, accepted
    /// differences, what legacy still serves.
    Report {
        #[arg(long, value_enum, default_value = "md")]
        format: ReportFormat,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The migration cost/benefit arithmetic, with what the proxy measured beside it.
    #[command(allow_negative_numbers = true)]
    Roi(RoiArgs),
    /// Send stored exchanges to a candidate build and print what still differs
    /// (exit 0 when nothing does, 3 when something does).
    Replay {
        route: String,
        #[arg(long)]
        candidate: String,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Add or replace a request header ('NAME: VALUE'), e.g. credentials.
        #[arg(long = "header")]
        headers: Vec<String>,
        /// Read exchanges from a file written by `export` instead of the admin API.
        #[arg(long)]
        from: Option<PathBuf>,
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
    let default_level = if matches!(cli.command, Command::Demo { .. }) {
        "error"
    } else {
        "info"
    };
    init_logging(cli.log_format, default_level);
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

/// Logs go to stderr; `STRANGLER_LOG` sets the filter (default `info`, or
/// `warn` for the demo, whose story is on stdout).
fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRANGLER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
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
        Command::Demo { keep } => match crate::demo::run(keep).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("strangler: the demo failed: {error:#}");
                ExitCode::from(1)
            }
        },
        Command::Status(admin) => client_call(status(&admin)).await,
        Command::Promote { route, admin } => {
            client_call(action(&admin, &route, "promote", None)).await
        }
        Command::Rollback { route, admin } => {
            client_call(action(&admin, &route, "rollback", None)).await
        }
        Command::Pause { route, admin } => client_call(action(&admin, &route, "pause", None)).await,
        Command::Resume { route, admin } => {
            client_call(action(&admin, &route, "resume", None)).await
        }
        Command::Reset { route, admin } => client_call(action(&admin, &route, "reset", None)).await,
        Command::Diffs {
            route,
            limit,
            admin,
        } => client_call(diffs(&admin, &route, limit)).await,
        Command::Accept {
            route,
            endpoint,
            path,
            note,
            admin,
        } => {
            let body = serde_json::json!({ "endpoint": endpoint, "path": path, "note": note });
            let call = async {
                let accepted = admin_client(&admin)
                    .post(&format!("/api/routes/{route}/accept"), Some(body))
                    .await?;
                Ok(format!(
                    "accepted on {route}: {} {}",
                    accepted["endpoint"].as_str().unwrap_or("?"),
                    accepted["path"].as_str().unwrap_or("?")
                ))
            };
            client_call(call).await
        }
        Command::Export {
            route,
            limit,
            admin,
        } => {
            let path = format!("/api/routes/{route}/export?limit={limit}");
            match admin_client(&admin).get_text(&path).await {
                Ok(text) => {
                    out!("{text}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("strangler: {error}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Report { format, admin } => {
            let call = async {
                let report = admin_client(&admin).get("/api/report").await?;
                Ok(match format {
                    ReportFormat::Json => serde_json::to_string_pretty(&report).unwrap_or_default(),
                    ReportFormat::Md => {
                        match serde_json::from_value::<crate::report::Report>(report) {
                            Ok(report) => crate::report::markdown(&report),
                            Err(error) => format!(
                                "the admin API answered a report this version cannot read: {error}"
                            ),
                        }
                    }
                })
            };
            client_call(call).await
        }
        Command::Roi(args) => roi(&args).await,
        Command::Replay {
            route,
            candidate,
            limit,
            headers,
            from,
            admin,
        } => replay(&admin, &route, &candidate, limit, &headers, from.as_deref()).await,
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
            client_call(action(&admin, &route, "weight", Some(body))).await
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
            outln!(
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
    call: impl std::future::Future<Output = Result<String, crate::client::ClientError>>,
) -> ExitCode {
    match call.await {
        Ok(text) => {
            outln!("{text}");
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

async fn diffs(
    admin: &AdminArgs,
    route: &str,
    limit: u32,
) -> Result<String, crate::client::ClientError> {
    let diffs = admin_client(admin)
        .get(&format!("/api/routes/{route}/diffs?limit={limit}"))
        .await?;
    let mut out = String::new();
    let list = diffs.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return Ok(format!("{route}: no stored mismatches"));
    }
    for diff in list {
        out.push_str(&format!(
            "#{} {} {} ({} {})\n",
            diff["id"],
            diff["at"].as_str().unwrap_or("?"),
            diff["endpoint"].as_str().unwrap_or("?"),
            diff["method"].as_str().unwrap_or("?"),
            diff["path"].as_str().unwrap_or("?"),
        ));
        for d in diff["differences"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {:<8} {} {:<22} legacy: {}  candidate: {}\n",
                d["kind"].as_str().unwrap_or("?"),
                paint(BOLD, &format!("{:<40}", d["path"].as_str().unwrap_or("?"))),
                d["change"].as_str().unwrap_or("?"),
                paint(RED, &short(&d["legacy"])),
                paint(GREEN, &short(&d["candidate"])),
            ));
        }
    }
    Ok(out.trim_end().to_string())
}

const BOLD: &str = "\x1b[1m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";

/// Colours `text` when stdout is a terminal (and `NO_COLOR` is unset).
fn paint(colour: &str, text: &str) -> String {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        format!("{colour}{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// A JSON value on one line, cut to a readable length.
fn short(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

async fn replay(
    admin: &AdminArgs,
    route: &str,
    candidate: &str,
    limit: u32,
    headers: &[String],
    from: Option<&std::path::Path>,
) -> ExitCode {
    let mut extra = Vec::new();
    for header in headers {
        let parsed = header.split_once(':').and_then(|(name, value)| {
            Some((
                http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                http::HeaderValue::from_str(value.trim()).ok()?,
            ))
        });
        match parsed {
            Some(pair) => extra.push(pair),
            None => {
                eprintln!("strangler: --header {header:?} is not 'NAME: VALUE'");
                return ExitCode::from(2);
            }
        }
    }
    let text = match from {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) => {
                eprintln!("strangler: cannot read {}: {error}", path.display());
                return ExitCode::from(2);
            }
        },
        None => match admin_client(admin)
            .get_text(&format!("/api/routes/{route}/export?limit={limit}"))
            .await
        {
            Ok(text) => text,
            Err(error) => {
                eprintln!("strangler: {error}");
                return ExitCode::from(1);
            }
        },
    };
    let (header, mut exchanges) = match crate::replay::parse_export(&text) {
        Ok(parsed) => parsed,
        Err(error) => {
            eprintln!("strangler: {error}");
            return ExitCode::from(2);
        }
    };
    exchanges.truncate(limit as usize);
    let results = match crate::replay::replay(&header, &exchanges, candidate, &extra).await {
        Ok(results) => results,
        Err(error) => {
            eprintln!("strangler: {error}");
            return ExitCode::from(2);
        }
    };
    let mut differing = 0;
    let mut failed = 0;
    for result in &results {
        match &result.differences {
            Ok(diffs) if diffs.is_empty() => {}
            Ok(diffs) => {
                differing += 1;
                outln!("{} ({} {})", result.endpoint, result.method, result.path);
                for d in diffs {
                    outln!(
                        "  {:<8} {:<40} {:<22} legacy: {}  candidate: {}",
                        d.kind.as_str(),
                        d.path,
                        serde_json::to_value(d.change)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        short(&d.legacy),
                        short(&d.candidate)
                    );
                }
            }
            Err(reason) => {
                failed += 1;
                outln!(
                    "{} ({} {}): not compared: {reason}",
                    result.endpoint,
                    result.method,
                    result.path
                );
            }
        }
    }
    outln!(
        "{} exchanges replayed: {} identical, {} differing, {} not compared",
        results.len(),
        results.len() - differing - failed,
        differing,
        failed
    );
    if differing > 0 || failed > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

async fn roi(args: &RoiArgs) -> ExitCode {
    use crate::report::{roi, RoiInputs};
    let inputs = RoiInputs {
        performance_gain: args.performance_gain,
        instances: args.instances,
        instance_cost_per_month: args.instance_cost,
        months: args.months,
        incidents_avoided: args.incidents_avoided,
        cost_per_incident: args.incident_cost,
        productivity_gain: args.productivity_gain,
        engineer_months: args.engineer_months,
        cost_per_engineer_month: args.engineer_month_cost,
        velocity_loss: args.velocity_loss,
    };
    let result = match roi(&inputs) {
        Ok(result) => result,
        Err(error) => {
            eprintln!("strangler: {error}");
            return ExitCode::from(2);
        }
    };
    let money = |v: f64| format!("{v:>14.2}");
    outln!("Benefit over {} months", args.months);
    outln!(
        "  infrastructure  {} = {} gain × {} instances × {} per month × {} months",
        money(result.infrastructure_savings),
        args.performance_gain,
        args.instances,
        args.instance_cost,
        args.months
    );
    outln!(
        "  incidents       {} = {} avoided × {} each",
        money(result.incident_savings),
        args.incidents_avoided,
        args.incident_cost
    );
    outln!("  productivity    {}", money(result.productivity_gain));
    outln!("  total           {}", money(result.benefit));
    outln!("Cost");
    outln!(
        "  engineering     {} = {} engineer-months × {} each",
        money(result.engineering_cost),
        args.engineer_months,
        args.engineer_month_cost
    );
    outln!("  velocity loss   {}", money(result.velocity_loss));
    outln!("  total           {}", money(result.cost));
    outln!("Net               {}", money(result.net));
    match result.break_even_month {
        Some(month) => outln!("Break-even        month {month}"),
        None => outln!("Break-even        not within {} months", args.months),
    }
    // Evidence for choosing the inputs: measured, never turned into money.
    outln!();
    outln!("What the proxy measured (evidence for the inputs, not part of the sum):");
    match admin_client(&args.admin).get("/api/routes").await {
        Ok(routes) => {
            let (mut legacy, mut candidate) = (0u64, 0u64);
            for r in routes.as_array().into_iter().flatten() {
                let (l, c) = (&r["legacy"], &r["candidate"]);
                legacy += l["requests"].as_u64().unwrap_or(0);
                candidate += c["requests"].as_u64().unwrap_or(0);
                outln!(
                    "  {:<16} legacy p50/p99 {}/{} ms, errors {}; candidate p50/p99 {}/{} ms, errors {}",
                    r["name"].as_str().unwrap_or("?"),
                    l["p50_ms"],
                    l["p99_ms"],
                    l["error_rate"],
                    c["p50_ms"],
                    c["p99_ms"],
                    c["error_rate"]
                );
            }
            let total = legacy + candidate;
            if total > 0 {
                outln!(
                    "  traffic already on the rewrite: {:.1}% of {total} live requests in the current windows",
                    candidate as f64 * 100.0 / total as f64
                );
            }
        }
        Err(error) => outln!("  (no measurements: {error})"),
    }
    ExitCode::SUCCESS
}

async fn status(admin: &AdminArgs) -> Result<String, crate::client::ClientError> {
    let routes = admin_client(admin).get("/api/routes").await?;
    let mut out = format!(
        "{:<16} {:<10} {:>7} {:<12} {:>9} {:>7} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>8} {}\n",
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
        "MATCH",
        "BLOCKED BY"
    );
    let ms = |v: &serde_json::Value| {
        v.as_f64()
            .map_or_else(|| "–".to_string(), |v| format!("{v:.2}ms"))
    };
    for r in routes.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<16} {:<10} {:>7} {:<12} {:>9} {:>7} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>8} {}\n",
            r["name"].as_str().unwrap_or("?"),
            r["stage"].as_str().unwrap_or("?"),
            r["weight"].to_string(),
            r["state"].as_str().unwrap_or("?"),
            r["legacy"]["requests"].to_string(),
            r["legacy"]["errors"].to_string(),
            ms(&r["legacy"]["p50_ms"]),
            ms(&r["legacy"]["p99_ms"]),
            r["candidate"]["requests"].to_string(),
            r["candidate"]["errors"].to_string(),
            ms(&r["candidate"]["p50_ms"]),
            ms(&r["candidate"]["p99_ms"]),
            r["shadow"]["match_rate"]
                .as_f64()
                .map_or_else(|| "–".to_string(), |v| format!("{:.2}%", v * 100.0)),
            r["blocked_by"].as_str().unwrap_or("–"),
        ));
    }
    Ok(out.trim_end().to_string())
}
