//! The `pixgate` binary: argument parsing, logging setup and dispatch; all behaviour lives in
//! the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pixgate::config::{self, Config, Flags};
use pixgate::server;

#[derive(Parser)]
#[command(
    name = "pixgate",
    version = pixgate::VERSION,
    about = "imgproxy-compatible image transform proxy",
    after_help = "Configuration: a TOML file (--config), every key overridable by PIXGATE_<KEY> \
                  environment variables, then by flags. IMGPROXY_KEY, IMGPROXY_SALT, \
                  IMGPROXY_SIGNATURE_SIZE and IMGPROXY_DEVELOPMENT_ERRORS_MODE are read \
                  too. See README.md, \"Configuration\"."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the transform API. Prints `listening on ADDR` once ready.
    Serve {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1:8080; port 0 picks a free port).
        #[arg(long)]
        listen: Option<String>,
        /// Directory served as `local:///` (default: the bundled sample images).
        #[arg(long)]
        local_root: Option<String>,
    },
    /// Print the signed path for PATH (everything after the signature, e.g.
    /// `/rs:fit:300:0/plain/https://example.com/a.jpg`) with the configured key/salt.
    Sign {
        /// The path to sign, starting with `/`.
        path: String,
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Which key pair to sign with (default: the first).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Exit 0 when a pixgate server answers its health check (`GET /health` → 200 `ok`),
    /// 1 otherwise: for container HEALTHCHECKs and load balancers' exec probes.
    Health {
        /// URL to check (default: `/health` on the configured `listen` address).
        #[arg(long)]
        url: Option<String>,
        /// TOML configuration file (for `listen`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Check or try a Lua policy before deploying it.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Run the whole engine on one file: `pixgate transform in.jpg rs:fit:800:0/f:webp out.webp`.
    Transform {
        /// Source image (any supported format; sniffed from its bytes).
        input: PathBuf,
        /// The options part of an imgproxy URL, e.g. `rs:fill:300:200/g:no/q:75/f:webp`.
        options: String,
        /// Where to write the result (`-` for standard output). Its extension names the
        /// output format when the options name none; a different `f:` is refused.
        output: PathBuf,
        /// libjpeg-turbo-like fast mode: decode closer to the target size, JPEG without
        /// trellis quantisation (about 10 ms less per 800 px JPEG, ~17% larger files).
        #[arg(long)]
        fast: bool,
        /// Largest source resolution in megapixels (checked from the header; default: the
        /// server's default).
        #[arg(long)]
        max_src_resolution: Option<f64>,
        /// The image `wm` draws (the server's `watermark_path`).
        #[arg(long)]
        watermark: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Compile FILE and run it against the canned requests a live reload uses; prints each
    /// decision as a JSON line. Exit status 1 with the Lua error (file:line) when it fails.
    Check {
        file: PathBuf,
        /// TOML configuration (for the memory and instruction limits).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run `decide` once for a request described by flags; prints the decision as JSON.
    Eval {
        file: PathBuf,
        /// The request path, e.g. `/insecure/rs:fit:300:0/plain/https://img.example.com/a.jpg`.
        #[arg(long, default_value = "/insecure/plain/local:///seeding.jpg")]
        path: String,
        /// API key (as sent in `X-Api-Key`).
        #[arg(long)]
        key: Option<String>,
        /// Client address.
        #[arg(long, default_value = "127.0.0.1")]
        ip: std::net::IpAddr,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long)]
        referer: Option<String>,
        /// `Accept` header, for `format` when the URL leaves it to negotiation.
        #[arg(long)]
        accept: Option<String>,
        /// TOML configuration (signing keys give `tenant`; limits).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn load_config(
    file: Option<&std::path::Path>,
    vars: impl Iterator<Item = (String, String)>,
    flags: &Flags,
) -> Result<Config, ExitCode> {
    config::load(file, vars, flags).map_err(|problems| {
        eprintln!("pixgate: invalid configuration:");
        for p in problems {
            eprintln!("  - {p}");
        }
        ExitCode::from(2)
    })
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&cfg.log_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    if cfg.log_format == config::LogFormat::Json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// A tokio runtime from `builder`, or the exit status that says why not.
fn runtime(builder: &mut tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("pixgate: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

fn serve(file: Option<PathBuf>, flags: Flags) -> ExitCode {
    let cfg = match load_config(file.as_deref(), std::env::vars(), &flags) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&cfg);
    let rt = match runtime(&mut tokio::runtime::Builder::new_multi_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let started = match server::Listeners::bind(&cfg).await {
            Ok(listeners) => {
                let ready = |r: server::Ready<'_>| {
                    println!("listening on {}", r.addr);
                    use std::io::Write;
                    let _ = std::io::stdout().flush();
                };
                server::run(listeners, cfg, ready, shutdown_signal()).await
            }
            Err(e) => Err(e),
        };
        match started {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pixgate: {e}");
                ExitCode::from(e.exit_code())
            }
        }
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

fn sign(path: &str, file: Option<PathBuf>, tenant: Option<String>) -> ExitCode {
    let cfg = match load_config(file.as_deref(), std::env::vars(), &Flags::default()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if !path.starts_with('/') {
        eprintln!("pixgate: the path must start with `/`");
        return ExitCode::from(2);
    }
    let pair = match &tenant {
        Some(t) => cfg.keys.iter().find(|k| &k.tenant == t),
        None => cfg.keys.first(),
    };
    match (pair, tenant) {
        (Some(p), _) => {
            let sig = pixgate::request::signature::sign(p, path, cfg.signature_size);
            println!("/{sig}{path}");
            ExitCode::SUCCESS
        }
        (None, Some(t)) => {
            eprintln!("pixgate: no key pair for tenant `{t}`");
            ExitCode::from(2)
        }
        (None, None) => {
            // Signing is off: the server accepts any signature segment.
            println!("/insecure{path}");
            ExitCode::SUCCESS
        }
    }
}

fn transform(
    input: PathBuf,
    options: String,
    output: PathBuf,
    fast: bool,
    max_src_resolution: Option<f64>,
    watermark: Option<PathBuf>,
) -> ExitCode {
    let mut cfg = if fast {
        pixgate::EngineConfig::fast()
    } else {
        pixgate::EngineConfig::default()
    };
    if let Some(m) = max_src_resolution {
        cfg.max_src_resolution = m;
    }
    if let Some(path) = watermark {
        let mark = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| pixgate::pixels::decode_watermark(&b).map_err(|e| e.to_string()));
        match mark {
            Ok(m) => cfg.watermark = Some(std::sync::Arc::new(m)),
            Err(e) => {
                eprintln!("pixgate: watermark {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    let src = match std::fs::read(&input) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("pixgate: cannot read {}: {e}", input.display());
            return ExitCode::from(2);
        }
    };
    // The output file's extension names the format when the options do not (`out.png`
    // gets PNG bytes); `-` and unknown extensions leave it to the source.
    let wanted = output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .and_then(|e| pixgate::Format::from_name(if e == "tif" { "tiff" } else { &e }));
    let run = std::panic::catch_unwind(|| pixgate::transform_as(&src, &options, wanted, &cfg));
    let out = match run {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            eprintln!("pixgate: {} ({}): {e}", e.code(), e.status());
            return ExitCode::from(1);
        }
        Err(_) => {
            eprintln!(
                "pixgate: internal-error (500): the engine panicked (a bug: please report it)"
            );
            return ExitCode::from(1);
        }
    };
    let written = if output.as_os_str() == "-" {
        use std::io::Write;
        std::io::stdout().write_all(&out.bytes)
    } else {
        std::fs::write(&output, &out.bytes)
    };
    if let Err(e) = written {
        eprintln!("pixgate: cannot write {}: {e}", output.display());
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

fn policy(command: PolicyCommand) -> ExitCode {
    use pixgate::policy;
    let (file, config) = match &command {
        PolicyCommand::Check { file, config } | PolicyCommand::Eval { file, config, .. } => {
            (file.clone(), config.clone())
        }
    };
    // The file under test replaces whatever policy the configuration names.
    let flags = Flags::default();
    let vars = std::env::vars().filter(|(k, _)| k != "PIXGATE_POLICY_FILE");
    let mut cfg = match load_config(config.as_deref(), vars, &flags) {
        Ok(c) => c,
        Err(code) => return code,
    };
    cfg.policy = None;
    let script = match policy::read_script(&file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pixgate: {e}");
            return ExitCode::from(1);
        }
    };
    let limits = cfg.policy_limits;
    match command {
        PolicyCommand::Check { .. } => {
            match policy::within(policy::RELOAD_TIMEOUT, "the check", move || {
                policy::check_script(&script, limits, true)
            }) {
                Ok(report) => {
                    for (req, d) in report.decisions {
                        let mut line = d.to_json();
                        line["request"] = serde_json::json!(format!(
                            "{} {} from {}{}",
                            req.method,
                            req.path,
                            req.ip,
                            req.key.map(|k| format!(" key {k}")).unwrap_or_default()
                        ));
                        println!("{line}");
                    }
                    for (name, d) in &report.tests {
                        let mut line = d.to_json();
                        line["test"] = serde_json::json!(name);
                        println!("{line}");
                    }
                    if report.tests.is_empty() {
                        println!(
                            "warning: the policy declares no tests (a global `tests` table): a typo in a branch the canned requests do not reach goes unnoticed until it serves"
                        );
                    } else if !report.uncovered.is_empty() {
                        println!(
                            "warning: lines of decide ({}) no test reached: {}",
                            report.decide_at,
                            line_ranges(&report.uncovered)
                        );
                    }
                    println!(
                        "policy ok: {} ({} tests passed)",
                        file.display(),
                        report.tests.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pixgate: policy check failed: {e}");
                    ExitCode::from(1)
                }
            }
        }
        PolicyCommand::Eval {
            path,
            key,
            ip,
            method,
            referer,
            accept,
            ..
        } => {
            let caller = pixgate::client::Caller {
                ip,
                key,
                method: &method,
                path: path.split('?').next().unwrap_or_default(),
                referer,
                user_agent: None,
            };
            let req = match pixgate::request::url::parse(
                &path,
                &cfg.url_context(pixgate::now_unix()),
            ) {
                Ok(parsed) => {
                    let (choice, _) = pixgate::negotiate::negotiate(
                        parsed.options.format,
                        accept.as_deref(),
                        cfg.auto_format,
                        cfg.enforce_format,
                    );
                    caller.policy_request(&parsed, choice)
                }
                Err(e) => {
                    // The server would answer this URL with an error before the policy runs;
                    // still show what the policy says about the rest of the request.
                    eprintln!(
                        "pixgate: note: the path does not parse ({e}); tenant, source and size are nil"
                    );
                    caller.unparsed_request()
                }
            };
            let run = policy::within(policy::RELOAD_TIMEOUT, "the evaluation", move || {
                policy::eval_once(&script, limits, &req)
            });
            match run {
                Ok(d) => {
                    println!("{}", d.to_json());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pixgate: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn health(url: Option<String>, file: Option<PathBuf>, timeout: f64) -> ExitCode {
    let url = match url {
        Some(u) => u,
        None => {
            let cfg = match load_config(file.as_deref(), std::env::vars(), &Flags::default()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            // A wildcard listener is reached on loopback.
            let mut addr = cfg.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            format!("http://{addr}/health")
        }
    };
    let timeout = std::time::Duration::try_from_secs_f64(timeout)
        .unwrap_or(std::time::Duration::from_secs(5));
    let rt = match runtime(&mut tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(pixgate::healthcheck::check(&url, timeout)) {
        Ok(()) => {
            println!("ok: {url}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pixgate: unhealthy: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `3, 5-7, 10` for sorted line numbers.
fn line_ranges(lines: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let start = lines[i];
        let mut end = start;
        while i + 1 < lines.len() && lines[i + 1] == end + 1 {
            i += 1;
            end = lines[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(", ")
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve {
            config,
            listen,
            local_root,
        } => serve(config, Flags { listen, local_root }),
        Command::Sign {
            path,
            config,
            tenant,
        } => sign(&path, config, tenant),
        Command::Transform {
            input,
            options,
            output,
            fast,
            max_src_resolution,
            watermark,
        } => transform(input, options, output, fast, max_src_resolution, watermark),
        Command::Policy { command } => policy(command),
        Command::Health {
            url,
            config,
            timeout,
        } => health(url, config, timeout),
    }
}
