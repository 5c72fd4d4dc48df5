//! Python virtual environments for the benchmarks that compare with upstream's Python tools.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The Python of `target/<name>`, created and filled with `packages` (pip, from PyPI) unless
/// `import <modules>` already works there.
pub fn python(root: &Path, name: &str, packages: &[&str], modules: &str) -> Result<PathBuf> {
    let venv = root.join("target").join(name);
    let python = venv.join("bin").join("python");
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", &format!("import {modules}")])
            .output()
            .is_ok_and(|o| o.status.success());
    if ready {
        return Ok(python);
    }
    println!(
        "Installing {} into {} …",
        packages.join(", "),
        venv.display()
    );
    let run = |c: &mut Command, what: &str| -> Result<()> {
        let out = c.output().with_context(|| format!("cannot start {what}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(&python)
            .args(["-m", "pip", "install", "-q"])
            .args(packages),
        "pip install",
    )?;
    Ok(python)
}
