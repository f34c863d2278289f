//! `beehive`: one binary for every Beehive component.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use beehive::{Registry, start, wait_for_migrations, write_addr_file};
use beehive_common::config::{Component, Settings, parse_duration, settings_markdown};
use beehive_common::shutdown::{Shutdown, trigger_on_signals};
use clap::{Parser, Subcommand};

const SETTINGS_HELP: &str = "\
Settings come from BEEHIVE_* environment variables, over an optional YAML file
(--config or BEEHIVE_CONFIG_FILE), over local defaults. Run `beehive config-reference`
for the full table; the most used:
  BEEHIVE_DATABASE_URL   postgres://postgres@127.0.0.1:5432/beehive
  BEEHIVE_REDIS_URL      redis://127.0.0.1:6379
  BEEHIVE_AMQP_URL       amqp://guest:guest@127.0.0.1:5672/%2f
  BEEHIVE_HTTP_ADDR      0.0.0.0:8080  (gateway)
  BEEHIVE_ADMIN_ADDR     0.0.0.0:9090  (/healthz /readyz /metrics)
  BEEHIVE_<C>_LISTEN     gRPC listen address of component C (AUTH 50050 .. FILE 50056)
  BEEHIVE_<C>_ADDR       where other components reach C
  BEEHIVE_INSTALLATION   prefix of Redis keys and RabbitMQ names (beehive)
  BEEHIVE_LOG_FORMAT     text | json
Unknown BEEHIVE_* variables are reported at start-up.";

/// Beehive: a self-hostable instant-messaging backend.
#[derive(Parser)]
#[command(name = "beehive", version, about, after_long_help = SETTINGS_HELP, after_help = SETTINGS_HELP)]
struct Cli {
    /// YAML settings file (same keys as the BEEHIVE_* variables).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves one component (gateway, auth, user, social, message, presence, search,
    /// file), several (`auth,user,social`), or `all` of them in one process
    /// (migrations are applied first).
    Serve {
        /// A component name, a comma-separated list, or `all`.
        component: String,
        /// Writes the bound addresses as JSON to this file once serving (for scripts
        /// and tests that use port 0).
        #[arg(long, value_name = "FILE")]
        addr_file: Option<PathBuf>,
    },
    /// Applies every pending database migration of every component.
    Migrate {
        /// Only wait until another process (the migration Job) has applied them: every
        /// pod's init container runs this so no pod serves an older schema.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (e.g. 300s, 10m).
        #[arg(long, default_value = "10m", value_parser = parse_timeout)]
        timeout: Duration,
    },
    /// Prints every setting with its default and meaning, as Markdown.
    ConfigReference,
    /// Search index operations (against the search component at BEEHIVE_SEARCH_ADDR).
    Search {
        #[command(subcommand)]
        command: SearchCommand,
    },
}

#[derive(Subcommand)]
enum SearchCommand {
    /// Rebuilds the search index from the message history and swaps it in; searches
    /// keep being answered meanwhile. Asking again with the same --request-id starts
    /// nothing new and reports that rebuild; another id while one runs is refused.
    Reindex {
        /// Idempotency key (1-128 of letters, digits, - _ . :); a new one by default.
        #[arg(long)]
        request_id: Option<String>,
        /// Waits until the rebuild ends; exits non-zero if it failed.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (e.g. 30m).
        #[arg(long, default_value = "1h", value_parser = parse_timeout)]
        timeout: Duration,
    },
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| format!("{text:?} is not a duration such as 300s or 10m"))
}

/// Every component this build contains.
fn registry() -> Registry {
    Registry::new()
        .with(
            Component::Auth,
            |ctx, listener| Box::pin(async move { beehive_auth::bind(&ctx, listener).await }),
            Some(&beehive_auth::MIGRATOR),
        )
        .with(
            Component::User,
            |ctx, listener| Box::pin(async move { beehive_user::bind(&ctx, listener).await }),
            Some(&beehive_user::MIGRATOR),
        )
        .with(
            Component::Social,
            |ctx, listener| Box::pin(async move { beehive_social::bind(&ctx, listener).await }),
            Some(&beehive_social::MIGRATOR),
        )
        .with(
            Component::Message,
            |ctx, listener| Box::pin(async move { beehive_message::bind(&ctx, listener).await }),
            Some(&beehive_message::MIGRATOR),
        )
        .with(
            Component::Search,
            |ctx, listener| Box::pin(async move { beehive_search::bind(&ctx, listener).await }),
            None,
        )
        .with(
            Component::File,
            |ctx, listener| Box::pin(async move { beehive_file::bind(&ctx, listener).await }),
            Some(&beehive_file::MIGRATOR),
        )
        .with(
            Component::Presence,
            |ctx, listener| Box::pin(async move { beehive_presence::bind(&ctx, listener).await }),
            None,
        )
        .with(
            Component::Gateway,
            |ctx, listener| Box::pin(async move { beehive_gateway::bind(&ctx, listener).await }),
            None,
        )
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = run(cli).await;
    beehive_common::telemetry::shutdown_tracing();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One readable line (with causes), not a backtrace: this is an operator's tool.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::ConfigReference = cli.command {
        print!("{}", settings_markdown());
        return Ok(());
    }
    let (settings, report) = Settings::load(cli.config.as_deref()).context("invalid settings")?;
    beehive_common::telemetry::init(&settings, &report);
    let registry = registry();
    match cli.command {
        Command::ConfigReference => Ok(()),
        Command::Search {
            command:
                SearchCommand::Reindex {
                    request_id,
                    wait,
                    timeout,
                },
        } => {
            let request_id = request_id.unwrap_or_else(|| format!("cli-{}", uuid::Uuid::now_v7()));
            let mut last = String::new();
            let done = beehive::search::reindex(&settings, &request_id, wait, timeout, |state| {
                let line = beehive::search::describe(state);
                if line != last {
                    println!("{line}");
                    last = line;
                }
            })
            .await?;
            tracing::debug!(request_id = %done.request_id, "reindex command done");
            Ok(())
        }
        Command::Migrate { wait, timeout } => {
            if wait {
                wait_for_migrations(&settings, &registry, timeout).await?;
                tracing::info!("database schema is current");
            } else {
                beehive::migrate(&settings, &registry).await?;
                tracing::info!("migrations applied");
            }
            Ok(())
        }
        Command::Serve {
            component,
            addr_file,
        } => {
            let (components, migrate) = if component == "all" {
                (registry.available(), true)
            } else {
                let mut parsed = Vec::new();
                for name in component.split(',').map(str::trim) {
                    parsed.push(Component::parse(name).with_context(|| {
                        format!("unknown component {name:?}; expected all, or one or more (comma-separated) of gateway, auth, user, social, message, presence, search, file")
                    })?);
                }
                (parsed, false)
            };
            let shutdown = Shutdown::new();
            tokio::spawn(trigger_on_signals(shutdown.clone()));
            tracing::info!(
                components = ?components.iter().map(|c| c.name()).collect::<Vec<_>>(),
                instance = %settings.instance_id,
                installation = %settings.installation,
                database = %settings.database_url,
                "starting"
            );
            let running =
                start(settings, &registry, &components, migrate, shutdown.clone()).await?;
            tracing::info!(addresses = ?running.addresses, "serving");
            if let Some(path) = addr_file {
                write_addr_file(&path, &running.addresses)?;
            }
            running.done.await?;
            tracing::info!("stopped");
            Ok(())
        }
    }
}
