//! What the gateway serves: providers, the models they serve and their prices.
//!
//! A [`Catalog`] is one consistent snapshot; a [`LiveCatalog`] holds the one in force and
//! replaces it whole, so a call reads either the old catalog or the new one, never a mix.
//! The config file is where a catalog comes from today (reloaded on SIGHUP); an API can
//! later [`LiveCatalog::replace`] it the same way.

use crate::envoy_config::Upstream;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;
use tollgate_core::pricing::Price;
use tollgate_core::providers::ProviderKind;

/// A provider the gateway can send calls to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// Name; also the Envoy cluster that reaches it.
    pub name: String,
    /// Where Envoy reaches it (`url`).
    pub url: Upstream,
    /// The API it speaks.
    pub kind: ProviderKind,
    /// The longest its whole answer may take, streams included, in ms.
    pub timeout_ms: u32,
    /// Header carrying the provider's credential.
    pub auth_header: String,
    /// The full header value, or `None` to send no credential (e.g. a local server).
    pub auth_value: Option<String>,
    /// Client headers passed to this provider beyond the gateway's allow-list.
    pub forward_headers: Vec<String>,
    /// Responses `background: true` (usage never seen by the gateway) is allowed.
    pub allow_background: bool,
}

#[cfg(test)]
impl Provider {
    /// A plain OpenAI-kind provider on loopback, without credential, for tests.
    pub(crate) fn for_tests(name: &str) -> Self {
        Provider {
            name: name.into(),
            url: Upstream::parse("http://127.0.0.1:9000").unwrap(),
            kind: ProviderKind::OpenAi,
            timeout_ms: 1_000,
            auth_header: "authorization".into(),
            auth_value: None,
            forward_headers: Vec::new(),
            allow_background: false,
        }
    }
}

/// A model the gateway serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// Name, as clients write it in `model`.
    pub name: String,
    /// Name of the provider that serves it.
    pub provider: String,
    /// The name the provider knows it by, when it differs.
    pub upstream_model: Option<String>,
    /// Prices; all zero for a model marked free.
    pub price: Price,
    /// Most output tokens one completion may produce: caps a call's hold.
    pub max_output_tokens: u64,
}

/// Providers and models as validated together: every model's provider is among them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Providers by name.
    pub providers: HashMap<String, Provider>,
    /// Models by name.
    pub models: HashMap<String, Model>,
    /// Last prices of models an earlier catalog served and this one does not, by name:
    /// a call admitted before a reload is reported after it, and is still charged.
    pub retired_prices: HashMap<String, Price>,
}

impl Catalog {
    /// The model named `model` and the provider that serves it.
    pub fn route(&self, model: &str) -> Option<(&Model, &Provider)> {
        let model = self.models.get(model)?;
        let provider = self.providers.get(&model.provider)?;
        Some((model, provider))
    }

    /// The price of `model`: as served, or as last served before a reload removed it.
    pub fn price(&self, model: &str) -> Option<&Price> {
        match self.models.get(model) {
            Some(m) => Some(&m.price),
            None => self.retired_prices.get(model),
        }
    }

    /// This catalog as the successor of `old`: the prices of models `old` served or had
    /// retired, and this one does not serve, are kept as retired.
    fn succeeding(mut self, old: &Catalog) -> Self {
        let served_before = old.models.values().map(|m| (&m.name, &m.price));
        for (name, price) in old.retired_prices.iter().chain(served_before) {
            if !self.models.contains_key(name) {
                self.retired_prices.insert(name.clone(), *price);
            }
        }
        self
    }

    /// Served model names, sorted, for messages people read.
    pub fn model_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.models.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// The catalog in force, shared by every part that reads it; cheap to clone.
#[derive(Debug, Clone)]
pub struct LiveCatalog(Arc<ArcSwap<Catalog>>);

impl LiveCatalog {
    /// Puts `catalog` in force.
    pub fn new(catalog: Catalog) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(catalog)))
    }

    /// The catalog in force now; a caller keeps this snapshot for the whole of one call.
    pub fn current(&self) -> Arc<Catalog> {
        self.0.load_full()
    }

    /// Puts `catalog` in force for every later [`LiveCatalog::current`], keeping the
    /// prices of models it no longer serves (see [`Catalog::retired_prices`]); returns the
    /// old one.
    pub fn replace(&self, catalog: Catalog) -> Arc<Catalog> {
        // Computed from the catalog actually replaced, should two replaces race.
        self.0.rcu(|old| Arc::new(catalog.clone().succeeding(old)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, provider: &str, input: u64) -> Model {
        Model {
            name: name.into(),
            provider: provider.into(),
            upstream_model: None,
            price: Price {
                input,
                ..Price::default()
            },
            max_output_tokens: 16_384,
        }
    }

    fn catalog(models: &[Model]) -> Catalog {
        let provider = Provider::for_tests("p");
        Catalog {
            providers: HashMap::from([(provider.name.clone(), provider)]),
            models: models.iter().map(|m| (m.name.clone(), m.clone())).collect(),
            retired_prices: HashMap::new(),
        }
    }

    #[test]
    fn a_snapshot_taken_before_a_replace_keeps_the_old_catalog() {
        let live = LiveCatalog::new(catalog(&[model("m", "p", 1)]));
        let before = live.current();
        let old = live.replace(catalog(&[model("m", "p", 2), model("n", "p", 3)]));
        assert_eq!(before.models["m"].price.input, 1);
        assert_eq!(old.models["m"].price.input, 1);
        let after = live.current();
        assert_eq!(after.models["m"].price.input, 2);
        assert_eq!(after.model_names(), ["m", "n"]);
        assert!(
            live.clone().current().route("n").is_some(),
            "clones share it"
        );
    }

    #[test]
    fn a_route_needs_the_model_and_its_provider() {
        let c = catalog(&[model("m", "p", 1), model("orphan", "gone", 1)]);
        assert_eq!(
            c.route("m").map(|(m, p)| (&*m.name, &*p.name)),
            Some(("m", "p"))
        );
        assert!(c.route("orphan").is_none());
        assert!(c.route("nope").is_none());
    }
}
