//! What the gateway serves: providers, the models they serve and their prices over time.
//!
//! A [`Catalog`] is one consistent snapshot; a [`LiveCatalog`] holds the one in force and
//! replaces it whole, so a call reads either the old catalog or the new one, never a mix.
//! It is built from two parts: the config file's (reloaded on SIGHUP) and the store's
//! (providers and models added through the HTTP API, see [`admin`]); on a name both use,
//! the config file's wins.

pub mod admin;
pub mod stored;
pub mod upstream_policy;

use crate::envoy_config::Upstream;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use tollgate_core::pricing::Price;
use tollgate_core::providers::ProviderKind;

/// A provider the gateway can send calls to; its `Debug` never shows the credential.
#[derive(Clone, PartialEq, Eq)]
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

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("kind", &self.kind)
            .field("timeout_ms", &self.timeout_ms)
            .field("auth_header", &self.auth_header)
            // Catalogs reach logs through the structures holding them.
            .field(
                "auth_value",
                &self.auth_value.as_ref().map(|_| "<redacted>"),
            )
            .field("forward_headers", &self.forward_headers)
            .field("allow_background", &self.allow_background)
            .finish()
    }
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
    /// Prices over time; all zero for a model marked free.
    pub prices: PriceSchedule,
    /// Most output tokens one completion may produce: caps a call's hold.
    pub max_output_tokens: u64,
}

/// A price and the instant it takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceChange {
    /// From when, Unix ms.
    pub effective_from_ms: i64,
    /// The price from then on, until the next change.
    pub price: Price,
}

/// A model's prices over time: at least one, in order of their instants, each instant once.
/// The first applies to any earlier time as well, so a model always has a price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceSchedule(Vec<PriceChange>);

impl PriceSchedule {
    /// One price for all time (a model of the config file).
    pub fn fixed(price: Price) -> Self {
        Self(vec![PriceChange {
            effective_from_ms: i64::MIN,
            price,
        }])
    }

    /// The schedule of `changes` in any order, or `None` when there are none; of two
    /// changes at one instant, the later in `changes` stands.
    pub fn from_changes(changes: impl IntoIterator<Item = PriceChange>) -> Option<Self> {
        let mut by_instant: Vec<PriceChange> = Vec::new();
        for change in changes {
            by_instant.retain(|c| c.effective_from_ms != change.effective_from_ms);
            by_instant.push(change);
        }
        by_instant.sort_by_key(|c| c.effective_from_ms);
        (!by_instant.is_empty()).then_some(Self(by_instant))
    }

    /// The price in force at `at_ms`.
    pub fn at(&self, at_ms: i64) -> &Price {
        let later = self.0.partition_point(|c| c.effective_from_ms <= at_ms);
        let change = later
            .checked_sub(1)
            .and_then(|i| self.0.get(i))
            .or_else(|| self.0.first());
        match change {
            Some(c) => &c.price,
            // Never empty by construction; a free price rather than a panic.
            None => &FREE,
        }
    }

    /// Every change, earliest first.
    pub fn changes(&self) -> &[PriceChange] {
        &self.0
    }

    /// This schedule followed by `price` from `at_ms` on (earlier changes kept, later ones
    /// dropped), or unchanged when `price` is already the one in force then.
    fn changed_at(&self, at_ms: i64, price: Price) -> Self {
        if *self.at(at_ms) == price {
            return self.clone();
        }
        let mut changes: Vec<PriceChange> = self
            .0
            .iter()
            .copied()
            .filter(|c| c.effective_from_ms < at_ms)
            .collect();
        changes.push(PriceChange {
            effective_from_ms: at_ms,
            price,
        });
        Self(changes)
    }
}

static FREE: Price = Price {
    input: 0,
    output: 0,
    cache_read: 0,
    cache_write: 0,
};

/// Providers and models as validated together: every model's provider is among them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Providers by name.
    pub providers: HashMap<String, Provider>,
    /// Models by name.
    pub models: HashMap<String, Model>,
    /// Prices of models an earlier catalog served and this one does not, by name: a call
    /// admitted before a reload is reported after it, and is still charged.
    pub retired_prices: HashMap<String, PriceSchedule>,
}

impl Catalog {
    /// The model named `model` and the provider that serves it.
    pub fn route(&self, model: &str) -> Option<(&Model, &Provider)> {
        let model = self.models.get(model)?;
        let provider = self.providers.get(&model.provider)?;
        Some((model, provider))
    }

    /// The price of `model` at `at_ms`: as served, or as last served before it was removed.
    pub fn price_at(&self, model: &str, at_ms: i64) -> Option<&Price> {
        match self.models.get(model) {
            Some(m) => Some(m.prices.at(at_ms)),
            None => self.retired_prices.get(model).map(|p| p.at(at_ms)),
        }
    }

    /// This catalog as the successor of `old`: the prices of models `old` served or had
    /// retired, and this one does not serve, are kept as retired.
    fn succeeding(mut self, old: &Catalog) -> Self {
        // What the old catalog served is the latest word on a model, then what it retired.
        let served_before = old.models.values().map(|m| (&m.name, &m.prices));
        for (name, prices) in served_before.chain(old.retired_prices.iter()) {
            if !self.models.contains_key(name) && !self.retired_prices.contains_key(name) {
                self.retired_prices.insert(name.clone(), prices.clone());
            }
        }
        self
    }

    /// This config file's catalog as the successor of `old`, read at `at_ms`: a model
    /// whose price changed keeps its old prices before `at_ms`, so a call made before a
    /// reload is priced as it was then.
    fn repriced_from(mut self, old: &Catalog, at_ms: i64) -> Self {
        for model in self.models.values_mut() {
            if let Some(before) = old.models.get(&model.name) {
                model.prices = before.prices.changed_at(at_ms, *model.prices.at(at_ms));
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

/// The config file's catalog and the store's, merged: the file wins a name both use (the
/// API refuses such names, so this is a name added to the file later), and a stored model
/// whose provider is gone is left out. Both are logged.
fn merged(config: &Catalog, stored: &Catalog) -> Catalog {
    let mut catalog = config.clone();
    for (name, provider) in &stored.providers {
        if catalog.providers.contains_key(name) {
            tracing::warn!(provider = %name, "provider `{name}` is in the config file and in the store; the config file's is served");
        } else {
            catalog.providers.insert(name.clone(), provider.clone());
        }
    }
    for (name, model) in &stored.models {
        if catalog.models.contains_key(name) {
            tracing::warn!(model = %name, "model `{name}` is in the config file and in the store; the config file's is served");
        } else if !catalog.providers.contains_key(&model.provider) {
            tracing::warn!(model = %name, provider = %model.provider, "model `{name}` names provider `{}`, which is not served; the model is left out", model.provider);
        } else {
            catalog.models.insert(name.clone(), model.clone());
        }
    }
    for (name, prices) in &stored.retired_prices {
        if !catalog.models.contains_key(name) {
            catalog
                .retired_prices
                .entry(name.clone())
                .or_insert_with(|| prices.clone());
        }
    }
    catalog
}

/// The two parts the catalog in force is merged from.
#[derive(Debug, Default)]
struct Parts {
    config: Catalog,
    stored: Catalog,
}

/// The catalog in force, shared by every part that reads it; cheap to clone.
#[derive(Debug, Clone)]
pub struct LiveCatalog {
    current: Arc<ArcSwap<Catalog>>,
    /// Held while a part is replaced, so two replacements merge in turn.
    parts: Arc<Mutex<Parts>>,
}

impl LiveCatalog {
    /// Puts the config file's `catalog` in force, with nothing from the store yet.
    pub fn new(catalog: Catalog) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(catalog.clone())),
            parts: Arc::new(Mutex::new(Parts {
                config: catalog,
                stored: Catalog::default(),
            })),
        }
    }

    /// The catalog in force now; a caller keeps this snapshot for the whole of one call.
    pub fn current(&self) -> Arc<Catalog> {
        self.current.load_full()
    }

    /// Replaces the config file's part with `catalog`, read at `at_ms` (a reload); returns
    /// the catalog that was in force.
    pub fn replace(&self, catalog: Catalog, at_ms: i64) -> Arc<Catalog> {
        let mut parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        parts.config = catalog.repriced_from(&parts.config, at_ms);
        self.put(&parts)
    }

    /// Replaces the store's part with `stored` (read again after a change); returns the
    /// catalog that was in force.
    pub fn replace_stored(&self, stored: Catalog) -> Arc<Catalog> {
        let mut parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        parts.stored = stored;
        self.put(&parts)
    }

    /// Whether the config file serves a provider named `name`.
    pub fn config_has_provider(&self, name: &str) -> bool {
        let parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        parts.config.providers.contains_key(name)
    }

    /// Whether the config file serves a model named `name`.
    pub fn config_has_model(&self, name: &str) -> bool {
        let parts = self.parts.lock().unwrap_or_else(PoisonError::into_inner);
        parts.config.models.contains_key(name)
    }

    fn put(&self, parts: &Parts) -> Arc<Catalog> {
        let next = merged(&parts.config, &parts.stored);
        // Computed from the catalog actually replaced: all replacements hold `parts`.
        self.current
            .rcu(|old| Arc::new(next.clone().succeeding(old)))
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
            prices: PriceSchedule::fixed(Price {
                input,
                ..Price::default()
            }),
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
        let old = live.replace(catalog(&[model("m", "p", 2), model("n", "p", 3)]), 100);
        assert_eq!(before.models["m"].prices.at(200).input, 1);
        assert_eq!(old.models["m"].prices.at(200).input, 1);
        let after = live.current();
        assert_eq!(after.models["m"].prices.at(200).input, 2);
        assert_eq!(
            after.models["m"].prices.at(99).input,
            1,
            "a call made before the reload keeps the price of then"
        );
        assert_eq!(after.model_names(), ["m", "n"]);
        assert!(
            live.clone().current().route("n").is_some(),
            "clones share it"
        );
    }

    #[test]
    fn a_provider_printed_for_a_log_never_shows_its_credential() {
        let p = Provider {
            auth_value: Some("Bearer sk-PRINTED-NEVER".into()),
            ..Provider::for_tests("p")
        };
        let live = LiveCatalog::new(Catalog {
            providers: HashMap::from([("p".to_owned(), p.clone())]),
            ..Catalog::default()
        });
        let printed = format!("{p:?} {live:?}");
        assert!(printed.contains("<redacted>"), "{printed}");
        assert!(!printed.contains("PRINTED"), "{printed}");
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

    fn change(from: i64, input: u64) -> PriceChange {
        PriceChange {
            effective_from_ms: from,
            price: Price {
                input,
                ..Price::default()
            },
        }
    }

    #[test]
    fn a_schedule_answers_the_price_in_force_at_each_instant() {
        let s =
            PriceSchedule::from_changes([change(200, 2), change(100, 1), change(300, 3)]).unwrap();
        let at = |t| s.at(t).input;
        assert_eq!(
            [
                at(50),
                at(100),
                at(199),
                at(200),
                at(299),
                at(300),
                at(i64::MAX)
            ],
            [1, 1, 1, 2, 2, 3, 3]
        );
        assert!(PriceSchedule::from_changes([]).is_none());
        let twice = PriceSchedule::from_changes([change(1, 1), change(1, 9)]).unwrap();
        assert_eq!(twice.changes(), [change(1, 9)]);
        let changed = s.changed_at(
            250,
            Price {
                input: 7,
                ..Price::default()
            },
        );
        assert_eq!(
            changed.changes(),
            [change(100, 1), change(200, 2), change(250, 7)]
        );
        assert_eq!(
            s.changed_at(250, *s.at(250)),
            s,
            "the same price is no change"
        );
    }

    #[test]
    fn the_config_file_wins_a_name_and_a_stored_model_needs_its_provider() {
        let live = LiveCatalog::new(catalog(&[model("m", "p", 1)]));
        let mut stored = catalog(&[
            model("m", "p", 5),
            model("s", "p", 6),
            model("lost", "gone", 7),
        ]);
        stored.retired_prices.insert(
            "old".into(),
            PriceSchedule::fixed(Price {
                input: 8,
                ..Price::default()
            }),
        );
        live.replace_stored(stored);
        let c = live.current();
        assert_eq!(c.price_at("m", 0).map(|p| p.input), Some(1));
        assert_eq!(c.price_at("s", 0).map(|p| p.input), Some(6));
        assert!(c.route("lost").is_none());
        assert_eq!(c.price_at("old", 0).map(|p| p.input), Some(8));
        // A reload keeps the stored part; the stored part's removal retires its models.
        live.replace(catalog(&[model("m", "p", 2)]), 10);
        assert!(live.current().route("s").is_some());
        live.replace_stored(Catalog::default());
        let c = live.current();
        assert!(c.route("s").is_none());
        assert_eq!(c.price_at("s", 0).map(|p| p.input), Some(6), "still priced");
        assert!(live.config_has_model("m") && !live.config_has_model("s"));
    }
}
