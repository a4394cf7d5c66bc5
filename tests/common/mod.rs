//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The repository root (scenario paths in tests are relative to it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `retrace` command run from the repository root.
pub fn retrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retrace"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("the retrace binary runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh, empty directory under the target directory, unique to this test process.
pub fn scratch_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = root()
        .join("target")
        .join("test-scratch")
        .join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every scenario shipped in `scenarios/`.
pub fn shipped_scenarios() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(root().join("scenarios"))
        .expect("scenarios/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    all.sort();
    all
}

/// Runs the shipped scenario `name` with model `M` and `seed` in the simulator and writes
/// its trace into `dir`.
pub fn write_trace<M: retrace_sim::Model>(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let path = root().join("scenarios").join(name);
    let s = retrace_sim::scenario::parse::<M>(name, &read(&path)).unwrap();
    let report = retrace_sim::Simulation::<M>::new(&s, seed, retrace_sim::TraceSink::Memory).run();
    let out = dir.join(format!("{name}-{seed}.trace"));
    std::fs::write(&out, report.trace.unwrap()).unwrap();
    out
}

/// Records kv with the ack-before-replicate bug as real processes (`retrace cluster`) for
/// 2.5 s into `dir/rec`, and merges the logs into `dir/merged.trace`.
pub fn record_and_merge_kv(dir: &Path) -> PathBuf {
    let rec = dir.join("rec");
    let o = retrace(&[
        "cluster",
        "scenarios/kv-ack-before-replicate.toml",
        "--record",
        rec.to_str().unwrap(),
        "--duration",
        "2500ms",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let merged = dir.join("merged.trace");
    let o = retrace(&[
        "merge",
        rec.to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    merged
}

/// The manifest a running `retrace cluster` writes into `dir`, once it is there.
pub fn wait_for_manifest(dir: &Path) -> retrace_recorder::manifest::Manifest {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(m) = retrace_recorder::manifest::Manifest::read(dir) {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster never wrote its manifest"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `retrace cluster SCENARIO --record DIR --duration D` started in the background, and its
/// manifest once written.
pub fn start_cluster(
    scenario: &str,
    dir: &Path,
    duration: &str,
) -> (std::process::Child, retrace_recorder::manifest::Manifest) {
    let child = Command::new(env!("CARGO_BIN_EXE_retrace"))
        .args(["cluster", scenario, "--record"])
        .arg(dir)
        .args(["--duration", duration])
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the retrace binary runs");
    let manifest = wait_for_manifest(dir);
    (child, manifest)
}
