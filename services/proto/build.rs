//! Generates the gRPC code from `proto/beehive/v1` at build time, so the checked-in
//! `.proto` files are the only source of truth and generated code can never be stale.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The package root at run time, never `env!` (compile time): the compiled build
    // script is shared by every checkout using the same target dir, and a path baked
    // into it would make one checkout generate code from another checkout's protos.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let dir = root.join("beehive/v1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment now.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    // Relative to the package root, so cargo resolves it in whichever checkout builds:
    // artifacts are shared between checkouts of the workspace (a CI clone, worktrees)
    // through a common target dir, and an absolute path would keep watching the checkout
    // that built first, leaving the generated code stale in the others.
    println!("cargo:rerun-if-changed=../../proto/beehive/v1");
    for file in &files {
        if let Some(name) = file.file_name() {
            println!(
                "cargo:rerun-if-changed=../../proto/beehive/v1/{}",
                name.to_string_lossy()
            );
        }
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(
            PathBuf::from(std::env::var("OUT_DIR")?).join("beehive_descriptor.bin"),
        )
        .compile_protos(&files, &[root])?;
    Ok(())
}
