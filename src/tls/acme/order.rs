//! One order with one challenge type: authorizations, challenge files, polling,
//! finalization, download. Auto mode's fallback (a new order with the other type)
//! is the caller's (`issue` in mod.rs).

use super::error::{AcmeError, CaProblem, ChallengeKind};
use super::{AcmeSettings, Issued, Validation, cert};
use crate::tls::store;
use instant_acme::{Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, Order, OrderStatus, RetryPolicy};
use std::path::PathBuf;
use std::time::Duration;

/// How many times a `Validation::Fresh` order is placed again after deactivating the
/// authorizations the CA reused (a CA may hold several valid ones for a name).
const FRESH_ORDERS: usize = 3;

/// Polls start at 50 ms and grow by half each time (a dozen polls in the first 3 s;
/// a CA's Retry-After wins): a CA that validates at once (pebble, a warm Let's Encrypt)
/// issues in a fraction of a second instead of waiting out a long first delay.
const POLL: RetryPolicy = RetryPolicy::new().initial_delay(Duration::from_millis(50)).backoff(1.5).timeout(Duration::from_secs(120));

impl ChallengeKind {
    fn acme_type(self) -> ChallengeType {
        match self {
            ChallengeKind::Http01 => ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        }
    }
}

/// The challenge files this order wrote; removed when it ends, however it ends.
struct ChallengeFiles(Vec<PathBuf>);

impl Drop for ChallengeFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            if let Err(e) = store::remove_if_exists(path) {
                crate::warn!("ACME: {e}");
            }
        }
    }
}

pub(super) async fn attempt(account: &Account, settings: &AcmeSettings, names: &[String], kind: ChallengeKind) -> Result<Issued, AcmeError> {
    let url = settings.directory.as_str();
    let acme = |during: &'static str| move |e| AcmeError::from_acme(e, during, url);
    let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let started = std::time::Instant::now();
    let step = |what: &str| crate::debug!("ACME {kind} order for {}: {what} after {} ms", names.join(","), started.elapsed().as_millis());
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await.map_err(acme("placing the order"))?;
    step("placed");
    if settings.validation == Validation::Fresh {
        for _ in 0..FRESH_ORDERS {
            let reused = deactivate_valid(&mut order).await.map_err(acme("deactivating a reused authorization"))?;
            if reused.is_empty() {
                break;
            }
            crate::info!("ACME: the CA still held a validation of {}; deactivated it so that the {kind} challenge runs", reused.join(", "));
            order = account.new_order(&NewOrder::new(&identifiers)).await.map_err(acme("placing the order"))?;
        }
    }
    let mut files = ChallengeFiles(Vec::new());

    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(acme("fetching an authorization"))?;
        let domain = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Valid => continue, // validated recently for this account
            AuthorizationStatus::Pending => {}
            _ => return Err(AcmeError::ChallengeFailed { domain, kind, problem: None }),
        }
        let mut challenge = authz
            .challenge(kind.acme_type())
            .ok_or_else(|| AcmeError::ChallengeNotOffered { domain: domain.clone(), kind })?;
        let key_auth = challenge.key_authorization();
        let state = &settings.state_dir;
        let (path, body, mode) = match kind {
            ChallengeKind::Http01 => (
                store::http01_path(state, &challenge.token).map_err(protocol("the CA's challenge"))?,
                key_auth.as_str().to_string(),
                store::PUBLIC_MODE,
            ),
            ChallengeKind::TlsAlpn01 => (
                store::tls_alpn01_path(state, &domain).map_err(AcmeError::Invalid)?,
                cert::tls_alpn01_cert(&domain, key_auth.digest().as_ref()).map_err(AcmeError::Invalid)?,
                store::SECRET_MODE,
            ),
        };
        store::write_transient(&path, body.as_bytes(), mode).map_err(|e| AcmeError::State(e.to_string()))?;
        files.0.push(path);
        challenge.set_ready().await.map_err(acme("starting the validation"))?;
    }

    step("challenges ready");
    match order.poll_ready(&POLL).await {
        Ok(OrderStatus::Ready) => {}
        Ok(_) => return Err(why_invalid(&mut order, kind, None, url).await),
        Err(instant_acme::Error::Api(p)) => return Err(why_invalid(&mut order, kind, Some(CaProblem::from_acme(&p)), url).await),
        Err(e) => return Err(AcmeError::from_acme(e, "validating the challenges", url)),
    }
    drop(files); // validated: the CA will not look at them again
    step("validated");

    let (key_pem, csr) = cert::key_and_csr(names).map_err(AcmeError::Invalid)?;
    order.finalize_csr(&csr).await.map_err(acme("finalizing the order"))?;
    step("finalized");
    let chain_pem = order.poll_certificate(&POLL).await.map_err(acme("issuing the certificate"))?;
    step("issued");
    let leaf = cert::leaf_info(&chain_pem).map_err(protocol("reading the issued certificate"))?;
    Ok(Issued {
        names: names.to_vec(),
        directory: settings.directory.clone(),
        chain_pem,
        key_pem,
        not_before: leaf.not_before,
        not_after: leaf.not_after,
        serial: leaf.serial,
        issuer: leaf.issuer,
        ari_cert_id: leaf.ari_cert_id,
    })
}

/// Deactivates the order's authorizations that are already valid; returns their names.
async fn deactivate_valid(order: &mut Order) -> Result<Vec<String>, instant_acme::Error> {
    let mut names = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        if authz.status == AuthorizationStatus::Valid {
            names.push(authz.identifier().to_string());
            authz.deactivate().await?;
        }
    }
    Ok(names)
}

/// The order became invalid: find the authorization that failed and the CA's reason.
async fn why_invalid(order: &mut Order, kind: ChallengeKind, order_problem: Option<CaProblem>, url: &str) -> AcmeError {
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = match authz {
            Ok(a) => a,
            Err(e) => return AcmeError::from_acme(e, "reading why validation failed", url),
        };
        if let Err(e) = authz.refresh().await {
            return AcmeError::from_acme(e, "reading why validation failed", url);
        }
        if authz.status == AuthorizationStatus::Valid {
            continue;
        }
        let domain = authz.identifier().to_string();
        let problem = authz
            .challenges
            .iter()
            .find(|c| c.r#type == kind.acme_type())
            .and_then(|c| c.error.as_ref())
            .map(CaProblem::from_acme)
            .or(order_problem.clone());
        return AcmeError::ChallengeFailed { domain, kind, problem };
    }
    match order_problem {
        Some(p) => AcmeError::from_problem(p, "the order"),
        None => AcmeError::Protocol { during: "validating the challenges".into(), error: "the order became invalid with every authorization valid".into() },
    }
}

/// A `map_err` adapter for the string errors of the certificate helpers.
fn protocol(during: &'static str) -> impl Fn(String) -> AcmeError {
    move |error| AcmeError::Protocol { during: during.to_string(), error }
}
