//! Bakes an rpath to the project-local TF C library into every binary (no LD_LIBRARY_PATH needed).
fn main() {
    let dir = std::env::var("PRETEXT_TF_LIB")
        .unwrap_or_else(|_| format!("{}/.tf/lib", std::env::var("CARGO_MANIFEST_DIR").unwrap()));
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    println!("cargo:rerun-if-env-changed=PRETEXT_TF_LIB");
}
