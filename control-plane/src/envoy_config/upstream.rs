//! Where Envoy reaches a provider or the control plane: a provider's `url`, the
//! `[envoy] control_plane` address.

use std::net::IpAddr;
use url::Url;

/// How a provider is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `http://`: cleartext, for a server on the same host or network (vLLM, the offline provider).
    Cleartext,
    /// `https://`: TLS, the server's certificate checked against the CA bundle and its name.
    Tls,
}

/// A host as Envoy dials it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, resolved by Envoy (lower-case, ASCII).
    Name(String),
    /// An address, dialed as is.
    Ip(IpAddr),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A provider's address, from its `url` (e.g. `https://api.openai.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Cleartext or TLS, from the scheme.
    pub transport: Transport,
    /// The host.
    pub host: Host,
    /// The port; the scheme's (80, 443) when the URL names none.
    pub port: u16,
}

impl Upstream {
    /// Parses a provider `url`, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = Url::parse(text).map_err(|e| {
            format!(
                "`{text}` is not a URL like https://api.openai.com or http://127.0.0.1:9000 ({e})"
            )
        })?;
        let transport = match url.scheme() {
            "http" => Transport::Cleartext,
            "https" => Transport::Tls,
            other => {
                return Err(format!(
                    "has the scheme `{other}`: it must be http or https"
                ));
            }
        };
        // The filter writes each provider's path per its `kind`: a path here would be ignored.
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "`{text}` must be scheme, host and port only (the gateway sets each API's path)"
            ));
        }
        let (host, port) = host_and_port(&url, text)?;
        Ok(Self {
            transport,
            host,
            port,
        })
    }
}

/// Parses `host:port` (a name, an IPv4 address or a bracketed IPv6 one, and a port).
pub fn parse_endpoint(text: &str) -> Result<(Host, u16), String> {
    let url = Url::parse(&format!("http://{text}"))
        .map_err(|_| format!("`{text}` must be host:port, e.g. 127.0.0.1:50051"))?;
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{text}` must be host:port, e.g. 127.0.0.1:50051"));
    }
    let (host, port) = host_and_port(&url, text)?;
    // `Url` drops a port equal to the scheme's default; only a text without one has none.
    if url.port().is_none() && !text.ends_with(":80") {
        return Err(format!("`{text}` has no port: write host:port"));
    }
    Ok((host, port))
}

fn host_and_port(url: &Url, text: &str) -> Result<(Host, u16), String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials: use the provider's `api_key_env`".to_owned());
    }
    let host = match url.host() {
        Some(url::Host::Domain(name)) => {
            // Envoy resolves it and checks certificates against it: a DNS name only.
            let dns_ok = name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
            if !dns_ok {
                return Err(format!(
                    "`{text}` has the host `{name}`, which is not a DNS name"
                ));
            }
            Host::Name(name.to_owned())
        }
        Some(url::Host::Ipv4(ip)) => Host::Ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Host::Ip(IpAddr::V6(ip)),
        None => return Err(format!("`{text}` has no host")),
    };
    let port = url.port_or_known_default().unwrap_or(80);
    // Envoy takes port 0 and then connects nowhere.
    if port == 0 {
        return Err(format!(
            "`{text}` has port 0: name the port the server listens on"
        ));
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    #[test]
    fn https_and_http_urls() {
        assert_eq!(
            Upstream::parse("https://API.openai.com").unwrap(),
            Upstream {
                transport: Transport::Tls,
                host: Host::Name("api.openai.com".into()),
                port: 443
            }
        );
        assert_eq!(
            Upstream::parse("http://127.0.0.1:9000/").unwrap(),
            Upstream {
                transport: Transport::Cleartext,
                host: Host::Ip("127.0.0.1".parse().unwrap()),
                port: 9000
            }
        );
        assert_eq!(Upstream::parse("http://vllm.internal").unwrap().port, 80);
        assert_eq!(
            Upstream::parse("https://[::1]:8443").unwrap().host,
            Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("api.openai.com", "not a URL"),
            ("ftp://api.openai.com", "scheme `ftp`"),
            ("https://api.openai.com/v1", "host and port only"),
            ("https://api.openai.com?x=1", "host and port only"),
            ("https://user:pw@api.openai.com", "credentials"),
            ("https://a_b.example", "not a DNS name"),
            ("https://a..b", "not a DNS name"),
            ("https://x:99999", "not a URL"),
            ("http://127.0.0.1:0", "port 0"),
        ] {
            let e = Upstream::parse(url).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn endpoints_need_a_port() {
        assert_eq!(
            parse_endpoint("control-plane.svc:50051").unwrap(),
            (Host::Name("control-plane.svc".into()), 50051)
        );
        assert_eq!(
            parse_endpoint("[::1]:80").unwrap(),
            (Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), 80)
        );
        assert!(
            parse_endpoint("control-plane")
                .unwrap_err()
                .contains("no port")
        );
        assert!(parse_endpoint("cp:1/x").is_err());
        assert!(parse_endpoint("cp:0").unwrap_err().contains("port 0"));
    }
}
