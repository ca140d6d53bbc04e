//! TLS to the server: which CAs are trusted, the client certificate, and what a failed handshake
//! means for the user.
//!
//! Invariants: whenever the server's certificate is verified, its host name is verified too (the
//! `--url` host, or `--tls-server-name`); the only way to weaken that is mysql_async's own URL
//! parameters (`verify_ca=false`, `verify_identity=false`), and every run using them says so in a
//! warning. Every file is read and checked before the first connection, so a bad file is a usage
//! error (exit 2), never a connection failure. A handshake that fails on a certificate, or a
//! server that does not offer TLS when TLS was asked for, is a definite error: retrying cannot fix
//! it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use mysql_async::{ClientIdentity, DriverError, IoError, Opts, SslOpts, TlsError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

use crate::error::Usage;

/// What the options ask for, before any file is read.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// `--tls`: TLS even without a CA file or client certificate.
    pub require: bool,
    /// Also trust the CAs in this PEM file.
    pub ca: Option<PathBuf>,
    /// Trust only `ca`: not the system's roots nor those built into the binary.
    pub ca_only: bool,
    /// Client certificate chain and its private key, both PEM.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Verify the certificate for this name instead of the `--url` host.
    pub server_name: Option<String>,
}

/// The TLS settings of every connection, or `None` for a plain connection. `url` is the parsed
/// `--url`, whose `require_ssl=true` asks for TLS too; the options win over its other TLS
/// parameters. Fails (exit 2) on unreadable or malformed files and on contradictions.
pub fn resolve(options: &TlsOptions, url: &Opts) -> Result<Option<SslOpts>> {
    let from_url = url.ssl_opts();
    let wanted = options.require
        || options.ca.is_some()
        || options.ca_only
        || options.identity.is_some()
        || options.server_name.is_some();
    if !wanted && from_url.is_none() {
        return Ok(None);
    }
    let base = from_url.cloned().unwrap_or_default();
    if base.skip_domain_validation() && !base.accept_invalid_certs() {
        return Err(Usage(
            "verify_identity=false in --url is not supported: a verified certificate is always checked for the host name too. Give the name the certificate holds with --tls-server-name NAME".into(),
        )
        .into());
    }
    if base.accept_invalid_certs() && (options.ca.is_some() || options.server_name.is_some()) {
        return Err(Usage(
            "verify_ca=false in --url turns off the certificate check that --tls-ca/--tls-server-name configure: remove it from the URL".into(),
        )
        .into());
    }
    // mysql_async's `built_in_roots=false` means the same as --tls-ca-only.
    let ca_only = options.ca_only || base.disable_built_in_roots();
    let mut roots = Vec::new();
    match &options.ca {
        Some(ca) => {
            certificates(ca, "--tls-ca")?;
            roots.push(ca.clone().into());
        }
        None if ca_only => {
            return Err(Usage(
                "--tls-ca-only (or built_in_roots=false in --url) needs --tls-ca FILE: the CA to trust".into(),
            )
            .into())
        }
        None => {}
    }
    if !ca_only {
        roots.extend(system_roots()?.into_iter().map(|c| c.to_vec().into()));
    }
    let mut ssl = base.with_root_certs(roots).with_disable_built_in_roots(ca_only);
    if let Some((cert, key)) = &options.identity {
        check_identity(cert, key)?;
        ssl = ssl.with_client_identity(Some(ClientIdentity::new(cert.clone().into(), key.clone().into())));
    }
    if let Some(name) = &options.server_name {
        ServerName::try_from(name.as_str())
            .map_err(|_| Usage(format!("--tls-server-name `{name}` is neither a host name nor an IP address")))?;
        ssl = ssl.with_danger_tls_hostname_override(Some(name.clone()));
    }
    if ssl.accept_invalid_certs() {
        tracing::warn!(
            "TLS without any certificate check (verify_ca=false in --url): binlog-tail cannot tell the server from an impostor, so anyone on the network path can read and change the change stream. Give the server's CA with --tls-ca FILE instead"
        );
    }
    Ok(Some(ssl))
}

/// The certificates in a PEM file; fails (exit 2) when it holds none or one does not parse.
fn certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read(path, flag)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| Usage(format!("{flag} {}: not a valid PEM file ({e})", path.display())))?;
    if certs.is_empty() {
        return Err(Usage(format!(
            "{flag} {} holds no certificate: give a PEM file with -----BEGIN CERTIFICATE----- blocks",
            path.display()
        ))
        .into());
    }
    // The same parse the TLS library does when it connects, so a broken certificate fails here.
    for cert in &certs {
        RootCertStore::empty()
            .add(cert.clone())
            .map_err(|e| Usage(format!("{flag} {}: a certificate in it cannot be used ({e})", path.display())))?;
    }
    Ok(certs)
}

/// Checks that the client certificate and key load, and belong together, as the handshake will.
fn check_identity(cert: &Path, key: &Path) -> Result<()> {
    let chain = certificates(cert, "--tls-cert")?;
    let bytes = read(key, "--tls-key")?;
    let private = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        Usage(format!(
            "--tls-key {} holds no usable private key ({e}): give the client certificate's key as PEM (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY), unencrypted",
            key.display()
        ))
    })?;
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(RootCertStore::empty())
        .with_client_auth_cert(chain, private)
        .map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(_) => "the key does not belong to the certificate".to_string(),
                e => e.to_string(),
            };
            Usage(format!("--tls-cert {} with --tls-key {}: {why}", cert.display(), key.display()))
        })?;
    Ok(())
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Usage(format!("cannot read {flag} {}: {e}", path.display())).into())
}

/// The system's trusted CAs (or those of `SSL_CERT_FILE` / `SSL_CERT_DIR` when set). An unusable
/// system certificate is skipped, as other TLS clients do; an unreadable `SSL_CERT_FILE` is an error.
fn system_roots() -> Result<Vec<CertificateDer<'static>>> {
    let found = rustls_native_certs::load_native_certs();
    if let Some(e) = found.errors.first() {
        match ["SSL_CERT_FILE", "SSL_CERT_DIR"].into_iter().find(|v| std::env::var_os(v).is_some()) {
            Some(var) => return Err(Usage(format!("cannot use the CA certificates of {var}: {e}")).into()),
            None => tracing::debug!("some system CA certificates could not be read: {e}"),
        }
    }
    let mut usable = Vec::with_capacity(found.certs.len());
    for cert in found.certs {
        if RootCertStore::empty().add(cert.clone()).is_ok() {
            usable.push(cert);
        }
    }
    Ok(usable)
}

/// What a failed connection means when TLS is the cause, and what to do; `None` when it is not.
pub fn explain(err: &mysql_async::Error, opts: &Opts) -> Option<anyhow::Error> {
    let host = opts.ssl_opts().and_then(SslOpts::tls_hostname_override).unwrap_or(opts.ip_or_hostname());
    let at = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
    let what = match err {
        mysql_async::Error::Driver(DriverError::NoClientSslFlagFromServer) => format!(
            "the server at {at} does not offer TLS, which was asked for (--tls, --tls-ca, --tls-cert or require_ssl=true): configure ssl_cert and ssl_key on the server, or connect without TLS"
        ),
        mysql_async::Error::Driver(DriverError::NoKeyFound) => {
            "--tls-key holds no private key: give the client certificate's key as PEM".to_string()
        }
        mysql_async::Error::Io(IoError::Tls(TlsError::InvalidDnsName(_))) => format!(
            "`{host}` cannot be checked against a certificate: connect by host name or IP address, or give --tls-server-name NAME"
        ),
        mysql_async::Error::Io(IoError::Tls(TlsError::Tls(e))) => handshake(e, host)?,
        mysql_async::Error::Io(IoError::Tls(e)) => format!("{e}: check the files given to --tls-ca, --tls-cert and --tls-key"),
        mysql_async::Error::Io(IoError::Io(io)) => handshake(io.get_ref()?.downcast_ref::<rustls::Error>()?, host)?,
        _ => return None,
    };
    Some(anyhow!("TLS connection to {at} failed: {what}"))
}

/// A TLS handshake failure that retrying cannot fix; `None` for errors of a broken connection.
fn handshake(e: &rustls::Error, host: &str) -> Option<String> {
    Some(match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the server's certificate is not signed by a CA binlog-tail trusts: give the server's CA (its ssl_ca file) with --tls-ca FILE (if you did, that file does not hold the CA that signed the server's certificate)".to_string()
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { presented, .. }) => format!(
            "the server's certificate is not valid for `{host}` (it names {}): connect by one of its names, or verify it for the name it holds with --tls-server-name NAME",
            presented.iter().map(|n| plain_name(n)).collect::<Vec<_>>().join(", ")
        ),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => format!(
            "the server's certificate is not valid for `{host}`: connect by a name it holds, or give that name with --tls-server-name NAME"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => format!("the server's certificate is expired or not yet valid ({e}): renew it on the server, or check this machine's clock"),
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented | rustls::Error::UnsupportedNameType => {
            format!("the server's certificate was rejected ({e})")
        }
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateRequired
            | AlertDescription::AccessDenied),
        ) => format!(
            "the server refused the client certificate ({alert:?}): give one signed by a CA in the server's ssl_ca with --tls-cert and --tls-key"
        ),
        rustls::Error::AlertReceived(alert) => format!("the server ended the TLS handshake ({alert:?})"),
        rustls::Error::PeerIncompatible(_) => format!("the server and binlog-tail have no TLS version or cipher in common ({e})"),
        rustls::Error::InconsistentKeys(_) => "--tls-key is not the private key of --tls-cert".to_string(),
        _ => return None,
    })
}

/// A name as rustls presents it (`DnsName("db.example.com")`, `IpAddress(10.0.0.1)`), as a user
/// writes it.
fn plain_name(presented: &str) -> &str {
    match presented.split_once('(') {
        Some((_, inner)) => inner.trim_end_matches(')').trim_matches('"'),
        None => presented,
    }
}

#[cfg(test)]
mod tests {
    use super::plain_name;

    #[test]
    fn presented_names_read_as_written() {
        assert_eq!(plain_name("DnsName(\"db.example.com\")"), "db.example.com");
        assert_eq!(plain_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(plain_name("db"), "db");
    }
}
