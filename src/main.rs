//! `entradir`: command-line entry point. Parses arguments, sets up logging, and hands over to the subcommand.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use entradir::config::Config;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Present a Microsoft Entra ID tenant as an on-premises Active Directory (LDAP) and as address books
/// (CardDAV, desk-phone XML) for PBXs, CTI clients and phones.
///
/// Start with `entradir demo` to try it on a built-in simulated tenant. For production, write a config file
/// (see entradir.example.toml), check it with `entradir check-config --config FILE`, then
/// `entradir run --config FILE`. Send SIGHUP to reload the config, CSV and certificates; SIGUSR1 to sync now.
#[derive(Parser)]
#[command(name = "entradir", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server: sync from Entra ID and serve LDAP/CardDAV as configured.
    ///
    /// The directory is served from the state file at once (even when Graph is unreachable) and refreshed
    /// every `entra.sync_interval`. Signals: SIGHUP reloads config, UPN CSV, accounts and certificates (a bad
    /// reload changes nothing and logs why); SIGUSR1 syncs now; SIGTERM/SIGINT stop gracefully.
    ///
    /// The admin listener (`admin.listen`, 127.0.0.1:9180) serves /metrics, /healthz, /readyz, /status, POST
    /// /sync and the admin console at /console/ (sign in with the contents of `admin.token_file`): sync
    /// timeline, data quality, a lookup tester and the LDAP clients seen.
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Try entradir without an Entra tenant: a simulated tenant (Graph simulator) in-process, synced and served.
    ///
    /// Prints what is listening (LDAP on 127.0.0.1:10389 with anonymous read and a demo service account) and
    /// example queries. Stop with Ctrl-C.
    #[cfg(feature = "demo")]
    Demo(entradir::demo::DemoOptions),
    /// Run the Microsoft Graph simulator on its own (for tests, or to point `entradir run` at it).
    #[cfg(feature = "demo")]
    GraphSim(graph_sim::SimOptions),
    /// Run one sync round (resuming from state_dir when there is state) and print the directory.
    ///
    /// Talks to Graph exactly like the server (same client, same mapping) and persists the state, so a second
    /// call only fetches the delta.
    Export {
        #[arg(long, short)]
        config: PathBuf,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Format::Ldif)]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Validate a config file (and the UPN CSV and certificate files it names) without starting anything.
    ///
    /// With --online it also asks Microsoft's login endpoint for a token, which proves the tenant id, client id
    /// and secret (or certificate) are right.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
        /// Also get a Graph access token with the configured credential.
        #[arg(long)]
        online: bool,
    },
    /// Make an argon2 PHC hash for a service account's `password_hash` (reads the password from standard input).
    HashPassword,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Ldif,
    Json,
}

fn init_logging(json: bool, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ENTRADIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    entradir::panics::install_hook();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("entradir: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match rt.block_on(run(cli)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("entradir: {e:#}");
            1
        }
    };
    // Exit without dropping the runtime: its tasks still own the directory, and freeing a large tenant
    // allocation by allocation takes seconds that a rolling restart would wait for. Everything that must
    // reach the disk (the state file) was written and synced before `run` returned.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(code)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Run { config } => {
            let cfg = Config::load(&config)?;
            init_logging(cfg.log.format == "json", &cfg.log.level);
            entradir::server::run(cfg, Some(config)).await
        }
        #[cfg(feature = "demo")]
        Cmd::Demo(opts) => {
            init_logging(false, "info");
            entradir::demo::run(opts).await
        }
        #[cfg(feature = "demo")]
        Cmd::GraphSim(opts) => {
            init_logging(false, "info");
            graph_sim::run(opts).await
        }
        Cmd::Export { config, format, output } => {
            let cfg = Config::load(&config)?;
            init_logging(cfg.log.format == "json", "warn");
            // Export syncs and writes the state like `run`, so it must not run beside a server on the same
            // state_dir.
            let _state_lock = entradir::server::lock_state(&cfg)?;
            let mut engine = entradir::server::engine(&cfg)?;
            engine.round().await.context("sync round failed; nothing exported")?;
            let snap = engine.dir.published().load();
            let mut out: Box<dyn Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            match format {
                Format::Ldif => entradir::export::write_ldif(&mut out, &snap)?,
                Format::Json => entradir::export::write_json(&mut out, &snap)?,
            }
            out.flush()?;
            Ok(())
        }
        Cmd::CheckConfig { config, online } => {
            let cfg = Config::load(&config)?;
            init_logging(false, "warn");
            let settings = cfg.directory_settings()?;
            let graph = entradir::server::graph_config(&cfg)?;
            entradir::frontends::check(&cfg)?;
            // The admin token file and console networks, as `run` reads them.
            entradir::admin::AdminSettings::for_config(&cfg)?;
            entradir::server::check_secret_files(&cfg);
            if online {
                let syncer = entradir::graph::Syncer::new(graph)?;
                syncer
                    .check_credentials()
                    .await
                    .context("the Graph credential was refused")?;
                println!(
                    "Graph accepted the credential (tenant {}, client {})",
                    cfg.entra.tenant_id, cfg.entra.client_id
                );
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            for e in entradir::expiry::collect(&cfg) {
                let note = entradir::expiry::warning(&e, now)
                    .map(|w| format!(" — WARNING: {w}"))
                    .unwrap_or_default();
                println!(
                    "{} {} expires {}{note}",
                    e.what.replace('_', " "),
                    e.file,
                    entradir::time::iso8601(e.at)
                );
            }
            println!(
                "{}: OK (tenant {}, base DN {}, {} UPN mapping rows, {} service accounts)",
                config.display(),
                cfg.entra.tenant_id,
                settings.naming.base_dn,
                settings.upn_map.len(),
                cfg.accounts.len()
            );
            Ok(())
        }
        Cmd::HashPassword => {
            let mut pw = String::new();
            std::io::stdin()
                .read_line(&mut pw)
                .context("cannot read the password from standard input")?;
            let pw = pw.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!pw.is_empty(), "empty password");
            println!("{}", entradir::accounts::hash_password(pw)?);
            Ok(())
        }
    }
}
