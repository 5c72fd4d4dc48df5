//! `nanochat report reset|generate` (upstream v0 `python -m nanochat.report`): start a new
//! report (header with git, hardware, software, code size) or join the sections logged by
//! each stage into `report.md` with the summary table, copied to `--out`.

use std::path::{Path, PathBuf};

/// Flags of `report`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// reset (new header, sections removed) or generate (write report.md).
    #[arg(value_parser = ["reset", "generate"])]
    action: String,
    /// Where generate copies report.md (upstream: the current directory).
    #[arg(long, default_value = "report.md")]
    out: PathBuf,
    /// Device description for the header.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Runs `report`.
pub fn run(args: Args, base: &Path) -> anyhow::Result<()> {
    let r = nanochat::eval::Report::new(base);
    match args.action.as_str() {
        "reset" => {
            let device = match args.device.parse::<nanochat::core::DeviceSpec>() {
                Ok(d) => super::resolve_device(d).to_string(),
                Err(_) => args.device.clone(),
            };
            r.reset(Path::new("."), &device)?;
            println!("new report in {}", r.dir().display());
        }
        _ => {
            let text = r.generate()?;
            // Plots are referenced relative to the report folder; copy them beside --out.
            let out_dir = args
                .out
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            for e in std::fs::read_dir(r.dir())?.flatten() {
                if e.path().extension().is_some_and(|x| x == "png") {
                    std::fs::copy(e.path(), out_dir.join(e.file_name()))?;
                }
            }
            nanochat::core::fs::write_atomic(&args.out, text.as_bytes())?;
            println!("{text}");
            println!(
                "wrote {} (and {})",
                args.out.display(),
                r.dir().join("report.md").display()
            );
        }
    }
    Ok(())
}
