//! Release builds pack the executable's relative relocations (`DT_RELR`;
//! the loader must be glibc ≥ 2.36): every process of a core reads the
//! relocation table at start, and packed it is a few KiB instead of
//! about 300 KiB. Debug builds link as usual.

fn main() {
    println!("cargo:rerun-if-env-changed=PROFILE");
    println!("cargo:rerun-if-env-changed=VERDANT_NO_PACKED_RELOCS");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if release && linux && std::env::var_os("VERDANT_NO_PACKED_RELOCS").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
