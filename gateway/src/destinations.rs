//! The gateway's side of `payments_core::webhook::destination`: an endpoint's
//! URL is checked when it is registered (its name resolved then too), and every
//! delivery connects through `GuardedResolver`, which refuses a name that now
//! resolves to an internal address. A URL with an address in it skips DNS, so
//! deliveries check the URL itself first as well.

use std::net::SocketAddr;
use std::sync::Arc;

use payments_core::webhook::destination::{internal_name, Network, Policy};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

#[derive(Debug, Clone, Default)]
pub struct Destinations {
    policy: Policy,
}

impl Destinations {
    pub fn new(allowed: Vec<Network>) -> Self {
        Destinations { policy: Policy::new(allowed) }
    }

    /// What the URL itself says, without DNS: http(s), no user or password (the gateway
    /// would send them as Basic auth), no internal address or name.
    pub fn check_url(&self, url: &str) -> Result<Url, String> {
        let parsed = Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("the URL must be http or https".into());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("the URL may not carry a user name or password".into());
        }
        let refused = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => self.policy.refusal(ip.into()),
            Some(url::Host::Ipv6(ip)) => self.policy.refusal(ip.into()),
            Some(url::Host::Domain(name)) if internal_name(name) => Some("a metadata service"),
            Some(url::Host::Domain(_)) => None,
            None => Some("no host"),
        };
        match refused {
            Some(why) => Err(format!("webhooks are not sent to internal addresses ({why})")),
            None => Ok(parsed),
        }
    }

    /// `check_url`, and every address its name resolves to now (a name that does not
    /// resolve yet is checked again at each delivery).
    pub async fn check(&self, url: &str) -> Result<(), String> {
        let parsed = self.check_url(url)?;
        if let (Some(url::Host::Domain(name)), Some(port)) = (parsed.host(), parsed.port_or_known_default()) {
            if let Ok(addresses) = tokio::net::lookup_host((name, port)).await {
                for address in addresses {
                    if let Some(why) = self.policy.refusal(address.ip()) {
                        return Err(format!("webhooks are not sent to internal addresses ({name} resolves to {why})"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The resolver a delivery client connects through.
    pub fn resolver(&self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver { policy: self.policy.clone() })
    }
}

/// Resolves as the system does, and refuses the name when any address it resolves to
/// is internal (an attacker's DNS may mix one in).
pub struct GuardedResolver {
    policy: Policy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            if internal_name(&host) {
                return Err(format!("{host} is a metadata service").into());
            }
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(why) = addresses.iter().find_map(|a| policy.refusal(a.ip())) {
                return Err(format!("{host} resolves to an internal address ({why})").into());
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_an_internal_address_is_refused() {
        let none = Destinations::default();
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
            "http://169.254.169.254/latest/meta-data/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://10.1.2.3/",
            "http://[fd00::1]/",
            "https://user:pass@hooks.example.com/",
            "http://user:pass@127.0.0.1/",
            "ftp://hooks.example.com/",
        ] {
            assert!(none.check_url(url).is_err(), "{url}");
        }
        assert!(none.check_url("https://hooks.example.com/in?token=1").is_ok());
        let dev = Destinations::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(dev.check_url("http://127.0.0.1:9000/").is_ok(), "an allowed network");
        assert!(dev.check_url("http://10.0.0.1/").is_err(), "only the allowed network");
    }

    #[tokio::test]
    async fn a_name_is_judged_by_every_address_it_resolves_to() {
        // localhost resolves through /etc/hosts to loopback.
        assert!(Destinations::default().check("http://localhost:8080/").await.is_err());
        assert!(Destinations::new(vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()])
            .check("http://localhost:8080/")
            .await
            .is_ok());
        let resolved = Destinations::default().resolver().resolve("localhost".parse().unwrap()).await;
        assert!(resolved.is_err(), "a delivery to localhost is refused when it connects");
    }
}
