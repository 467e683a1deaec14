//! The `pixgate` binary: argument parsing and dispatch only; all behaviour lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pixgate",
    version,
    about = "imgproxy-compatible image transform engine and proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole engine on one file: `pixgate transform in.jpg rs:fit:800:0/f:webp out.webp`.
    Transform {
        /// Source image (any supported format; sniffed from its bytes).
        input: PathBuf,
        /// The options part of an imgproxy URL, e.g. `rs:fill:300:200/g:no/q:75/f:webp`.
        options: String,
        /// Where to write the result (`-` for standard output).
        output: PathBuf,
        /// libjpeg-turbo-like fast mode: decode closer to the target size, baseline JPEG
        /// without trellis quantisation (about 1.6x faster JPEG encodes, ~20% larger files).
        #[arg(long)]
        fast: bool,
        /// Largest source resolution in megapixels (checked from the header).
        #[arg(long, default_value_t = 50.0)]
        max_src_resolution: f64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Transform {
            input,
            options,
            output,
            fast,
            max_src_resolution,
        } => {
            let mut cfg = if fast {
                pixgate::EngineConfig::fast()
            } else {
                pixgate::EngineConfig::default()
            };
            cfg.max_src_resolution = max_src_resolution;
            let src = match std::fs::read(&input) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("pixgate: cannot read {}: {e}", input.display());
                    return ExitCode::from(2);
                }
            };
            let out = match pixgate::transform(&src, &options, &cfg) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("pixgate: {} ({}): {e}", e.code(), e.status());
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
    }
}
