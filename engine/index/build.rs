//! Records whether FAISS is being compiled with AVX2 (see `.cargo/config.toml`), so that
//! `index::check_cpu` can refuse to start on a CPU without it instead of dying on an
//! illegal instruction in the middle of the first search.

fn main() {
    const FLAGS: &str = "CXXFLAGS_x86_64_unknown_linux_gnu";
    println!("cargo:rustc-check-cfg=cfg(faiss_avx2)");
    println!("cargo:rerun-if-env-changed={FLAGS}");
    let x86_64 = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "x86_64");
    let avx2 = std::env::var(FLAGS).is_ok_and(|f| f.split_whitespace().any(|f| f == "-mavx2"));
    if x86_64 && avx2 {
        println!("cargo:rustc-cfg=faiss_avx2");
    }
}
