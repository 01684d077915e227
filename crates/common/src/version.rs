//! The version this executable reports: the crate version it was built
//! with, unless a release pipeline stamped another into the executable
//! afterwards (`scripts/update-repo.py add --stamp`): the bytes after the
//! marker below, up to the first NUL, are read at run time, so rewriting
//! them in a built file changes the version without a rebuild.

/// The marker, then 32 bytes of version, NUL-padded.
const FIELD: usize = 32;
const MARKER: &[u8; 24] = b"\0VERDANT-VERSION-STAMP:\0";

#[repr(C)]
struct Stamp {
    marker: [u8; 24],
    version: [u8; FIELD],
}

const fn stamp() -> Stamp {
    let built = env!("CARGO_PKG_VERSION").as_bytes();
    let mut version = [0u8; FIELD];
    let mut i = 0;
    while i < built.len() && i < FIELD {
        version[i] = built[i];
        i += 1;
    }
    Stamp {
        marker: *MARKER,
        version,
    }
}

#[used]
static STAMP: Stamp = stamp();

/// The version: `MAJOR.MINOR.PATCH` (with any pre-release or build part).
pub fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        // Read as memory, not as the constant the compiler knows, so a
        // stamped file tells its own version.
        // SAFETY: a plain read of an initialised static of bytes.
        let field: [u8; FIELD] = unsafe { std::ptr::read_volatile(&raw const STAMP.version) };
        let end = field.iter().position(|b| *b == 0).unwrap_or(FIELD);
        match std::str::from_utf8(&field[..end]) {
            Ok(v) if !v.is_empty() => v.to_string(),
            _ => env!("CARGO_PKG_VERSION").to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unstamped_build_says_its_crate_version_and_has_one_field() {
        assert_eq!(super::version(), env!("CARGO_PKG_VERSION"));
        assert_eq!(super::STAMP.marker, *super::MARKER);
    }
}
