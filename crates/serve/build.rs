//! Builds the dashboard's front-end (`dashboard/`, npm packages bundled by esbuild)
//! into `OUT_DIR/dashboard` and writes `OUT_DIR/dashboard_assets.rs`, the table of
//! embedded files that `src/dashboard.rs` serves. Nothing is fetched at run time.
//!
//! - Runs `npm ci` when `dashboard/node_modules` is missing or older than
//!   `package-lock.json`, then `node build.mjs`; stops with a message naming npm when
//!   npm or node is not installed.
//! - `AIS_DASHBOARD_DIST=DIR` embeds an already built bundle instead (`index.html` and
//!   `assets/`, as `node build.mjs --outdir DIR` makes it), for builds without npm.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    if let Err(message) = run() {
        eprintln!("\nerror: cannot build the ais dashboard: {message}\n");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env("OUT_DIR")?);
    let source = manifest_dir.join("dashboard");
    for input in ["src", "build.mjs", "package.json", "package-lock.json"] {
        println!("cargo:rerun-if-changed={}", source.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=AIS_DASHBOARD_DIST");

    let bundle = match std::env::var_os("AIS_DASHBOARD_DIST") {
        Some(prebuilt) => {
            let prebuilt = PathBuf::from(prebuilt);
            println!("cargo:rerun-if-changed={}", prebuilt.display());
            prebuilt
        }
        None => {
            let bundle = out_dir.join("dashboard");
            install_packages(&source)?;
            run_tool(
                Command::new("node")
                    .arg(source.join("build.mjs"))
                    .arg("--outdir")
                    .arg(&bundle)
                    .current_dir(&source),
                "node build.mjs",
            )?;
            bundle
        }
    };
    if !bundle.join("index.html").is_file() {
        return Err(format!(
            "{} has no index.html: the bundle is incomplete",
            bundle.display()
        ));
    }
    write_asset_table(&bundle, &out_dir.join("dashboard_assets.rs"))
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("cargo did not set {name}"))
}

/// `npm ci` unless `node_modules` already matches `package-lock.json`.
fn install_packages(source: &Path) -> Result<(), String> {
    let lock = source.join("package-lock.json");
    let installed = source.join("node_modules").join(".package-lock.json");
    let modified = |path: &Path| path.metadata().and_then(|meta| meta.modified()).ok();
    let up_to_date = match (modified(&installed), modified(&lock)) {
        (Some(installed), Some(lock)) => installed >= lock,
        _ => false,
    };
    if up_to_date {
        return Ok(());
    }
    run_tool(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(source),
        "npm ci",
    )
}

fn run_tool(command: &mut Command, what: &str) -> Result<(), String> {
    let program = command.get_program().to_string_lossy().into_owned();
    match command.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`{what}` failed ({status}); see its output above")),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "`{program}` is not installed. The dashboard is bundled from npm packages at \
             build time: install Node.js 18+ with npm (Debian: `apt-get install nodejs npm`), \
             or set AIS_DASHBOARD_DIST to a bundle built elsewhere with \
             `node crates/serve/dashboard/build.mjs --outdir DIR`"
        )),
        Err(error) => Err(format!("cannot run `{what}`: {error}")),
    }
}

/// `pub static ASSETS: &[Asset]`, one entry per file of the bundle, embedded with
/// `include_bytes!`.
fn write_asset_table(bundle: &Path, table: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    collect_files(bundle, bundle, &mut files)?;
    files.sort();
    let mut code = String::from("pub static ASSETS: &[Asset] = &[\n");
    for (relative, absolute) in &files {
        let _ = writeln!(
            code,
            "    Asset {{ path: {relative:?}, bytes: include_bytes!({absolute:?}) }},",
            absolute = absolute.display().to_string(),
        );
    }
    code.push_str("];\n");
    std::fs::write(table, code)
        .map_err(|error| format!("cannot write {}: {error}", table.display()))
}

fn collect_files(
    root: &Path,
    dir: &Path,
    files: &mut Vec<(String, PathBuf)>,
) -> Result<(), String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|error| format!("cannot read {}: {error}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|error| format!("cannot read {}: {error}", dir.display()))?
            .path();
        if path.is_dir() {
            collect_files(root, &path, files)?;
            continue;
        }
        let relative = path
            .strip_prefix(root)
            .map_err(|_| format!("{} is outside {}", path.display(), root.display()))?
            .components()
            .map(|part| part.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        files.push((relative, path));
    }
    Ok(())
}
