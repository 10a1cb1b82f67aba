//! A webhook's `ca_file`: the PEM certificates of the private CAs it trusts besides the
//! bundled and the system's roots. Checked when the rule is loaded (it must hold one
//! at least) and read again when the outbox makes the webhook's HTTP client.

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// `path`, made absolute, once it holds at least one PEM certificate.
pub(crate) fn check(path: &Path) -> Result<PathBuf, String> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    if read(&path)?.is_empty() {
        return Err(format!("ca_file: {} holds no PEM certificate", path.display()));
    }
    Ok(path)
}

/// The certificates of `path` (PEM; text around them is skipped); an error names the
/// file.
pub fn read(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("ca_file: cannot read {}: {e}", path.display()))?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca_file: {} is not PEM certificates: {e}", path.display()))
}
