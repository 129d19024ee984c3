use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hookrelay::settings::LogFormat;
use hookrelay::{Application, Settings};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// jemalloc, with its background threads returning freed pages to the system within seconds
/// even when the process goes quiet: after a storm of idle connections comes and goes, glibc's
/// allocator and mimalloc keep most of what it took, and jemalloc gives it back. `make bench`
/// measures it (the connection storm).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// hookrelay: a webhook dispatcher from RabbitMQ events to signed HTTP deliveries.
#[derive(Parser)]
#[command(version, about, after_help = SETTINGS_HELP)]
struct Cli {
    /// A TOML file of settings; `HOOKRELAY_<NAME>` environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Where the settings come from, under every command's help.
const SETTINGS_HELP: &str = "Settings: HOOKRELAY_<NAME> environment variables (e.g. \
HOOKRELAY_LISTEN=127.0.0.1:9090, HOOKRELAY_ADMIN_TOKEN=...) override those of --config FILE; \
each has a default that works against a local PostgreSQL and RabbitMQ. \
deploy/hookrelay.example.toml lists every setting with its default, and docs/operations.md \
says what each one does.";

#[derive(Subcommand)]
enum Command {
    /// Run the service: admin API, health, metrics (and the pipeline).
    ///
    /// Listens on `listen` (HOOKRELAY_LISTEN, default 127.0.0.1:8080) until SIGTERM or
    /// SIGINT, then finishes or hands back what is under way and exits 0. Applies the
    /// database migrations it needs first. Without `admin_token` (HOOKRELAY_ADMIN_TOKEN),
    /// every /v1 call answers 401.
    #[command(after_help = SETTINGS_HELP)]
    Serve,
    /// Create the database if needed and apply pending migrations, then exit.
    Migrate,
    /// Store every webhook secret sealed under `secret_key`, opening old ones with
    /// `secret_key` or `old_secret_keys`; then an old key can be dropped. Safe to run while
    /// services run, and to run again.
    Reencrypt {
        /// Without `secret_key`: store every secret in plain text again, turning encryption
        /// off. Refused unless asked for, so a missing setting cannot do it by accident.
        #[arg(long)]
        decrypt: bool,
    },
    /// Publish test events to the events exchange, as an upstream service would.
    Publish {
        /// The event type, also the routing key, e.g. `Contact.created`.
        #[arg(long = "type", value_name = "TYPE")]
        event_type: String,
        /// The account the events belong to.
        #[arg(long = "account", value_name = "ACCOUNT_ID")]
        account_id: String,
        /// The `data` of each event, as JSON.
        #[arg(long, default_value = "{}")]
        data: String,
        /// The event id (with --count, ids are ID-0, ID-1, ...). A new UUID per event if absent.
        #[arg(long)]
        id: Option<String>,
        /// How many events to publish.
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A command run by hand prints its failure once, plainly; the service logs it, as it
    // logs everything else.
    let logs_its_errors = matches!(cli.command, Command::Serve | Command::Migrate);
    let (settings, warnings) = match Settings::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("hookrelay: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Reencrypt { decrypt } = cli.command {
        let sealed = settings.secret_key.is_some();
        if sealed == decrypt {
            eprintln!(
                "hookrelay: {}",
                if sealed {
                    "--decrypt stores secrets in plain text, but secret_key is set: unset it first"
                } else {
                    "secret_key is not set: set it to seal the secrets, or pass --decrypt to \
                     store them in plain text"
                }
            );
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hookrelay: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tracer = match &settings.otlp_endpoint {
        Some(endpoint) => match hookrelay::otlp::provider(endpoint, runtime.handle().clone()) {
            Ok(provider) => Some(provider),
            Err(e) => {
                eprintln!("hookrelay: otlp_endpoint: {e:#}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    init_logging(settings.log_format, tracer.as_ref());
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve(settings).await,
            Command::Migrate => hookrelay::migrate(&settings).await.map(|applied| {
                tracing::info!(applied, "the database schema is up to date");
            }),
            Command::Reencrypt { .. } => {
                let sealed = settings.secret_key.is_some();
                hookrelay::reencrypt(&settings)
                    .await
                    .map(|(rewritten, seen)| {
                        let how = if sealed {
                            "sealed under secret_key"
                        } else {
                            "stored in plain text"
                        };
                        println!(
                            "{rewritten} of {seen} webhooks rewritten; every secret is now {how}"
                        );
                    })
            }
            Command::Publish {
                event_type,
                account_id,
                data,
                id,
                count,
            } => {
                let args = hookrelay::publish::PublishArgs {
                    event_type,
                    account_id,
                    data,
                    id,
                    count,
                };
                hookrelay::publish::publish(
                    &settings.amqp_url,
                    &settings.namespace,
                    settings.queue_type,
                    &args,
                )
                .await
                .map(|done| {
                    let rate = done.ids.len() as f64 / done.seconds.max(1e-9);
                    if let [only] = done.ids.as_slice() {
                        println!("published event {only}");
                    } else {
                        println!(
                            "published {} events in {:.2}s ({rate:.0}/s)",
                            done.ids.len(),
                            done.seconds
                        );
                    }
                })
            }
        }
    });
    if let Some(provider) = tracer {
        // Sends what is still batched; the export runs on the runtime, alive until here.
        if let Err(e) = provider.shutdown() {
            eprintln!("hookrelay: the last spans were not exported: {e}");
        }
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if logs_its_errors => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("hookrelay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    // Handlers go in before anything else, so a signal during start-up (migrations may wait
    // for the database) stops the service cleanly instead of killing it.
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
        }
        on_signal.cancel();
    });
    let app = tokio::select! {
        app = Application::build(settings, shutdown.clone()) => app?,
        _ = shutdown.cancelled() => {
            tracing::info!("stopped during start-up");
            return Ok(());
        }
    };
    app.run_until_stopped().await
}

fn init_logging(format: LogFormat, tracer: Option<&opentelemetry_sdk::trace::SdkTracerProvider>) {
    // The AMQP client's own logging repeats what hookrelay logs with its meaning
    // (`hookrelay_broker::CLIENT_LOG_FILTER` says why): quiet unless RUST_LOG asks for it.
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("info,{}", hookrelay_broker::CLIENT_LOG_FILTER))
    });
    // tokio-postgres logs every statement's parameters at debug level (target
    // `tokio_postgres::query`, nothing else), and those include webhook secrets and custom
    // header values: that target is off whatever RUST_LOG asks (a directive for the same
    // target replaces the user's).
    if let Ok(directive) = "tokio_postgres::query=off".parse() {
        filter = filter.add_directive(directive);
    }
    use std::io::IsTerminal as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    // One filter in front of every layer: spans exported are cut as log lines are.
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(tracer.map(hookrelay::otlp::layer))
        .init();
}
