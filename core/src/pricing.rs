//! Cost of a call from its usage and the model's prices.
//!
//! Prices are integers in micro-dollars per million tokens, so that a cost in
//! pico-dollars is an exact integer product: `tokens × µ$/Mtok = p$`.
//! Nothing here touches floating point after a price is parsed.

use crate::usage::Usage;
use thiserror::Error;

/// Pico-dollars in one US dollar.
pub const PICOS_PER_DOLLAR: u64 = 1_000_000_000_000;

/// A model's prices, each in micro-dollars per one million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    /// Uncached prompt tokens.
    pub input: u64,
    /// Generated tokens (reasoning included).
    pub output: u64,
    /// Prompt tokens read from cache.
    pub cache_read: u64,
    /// Prompt tokens written to cache.
    pub cache_write: u64,
}

/// A price that cannot be turned into whole micro-dollars.
#[derive(Debug, Error, PartialEq)]
pub enum PriceError {
    /// Negative, NaN or infinite.
    #[error("must be a finite number >= 0, got {0}")]
    NotPositive(f64),
    /// Finer than a micro-dollar per million tokens.
    #[error("has more than 6 decimal places ({0}); prices are kept in whole micro-dollars")]
    TooPrecise(f64),
    /// Over a million dollars per million tokens: surely a typo.
    #[error("{0} dollars per million tokens is beyond any real price")]
    TooLarge(f64),
}

/// Converts dollars per million tokens (as written in config) to micro-dollars per million.
pub fn micros_per_mtok(dollars: f64) -> Result<u64, PriceError> {
    if !dollars.is_finite() || dollars < 0.0 {
        return Err(PriceError::NotPositive(dollars));
    }
    if dollars > 1_000_000.0 {
        return Err(PriceError::TooLarge(dollars));
    }
    let micros = dollars * 1_000_000.0;
    let rounded = micros.round();
    // Tolerate binary representation error (0.15 * 1e6 = 149999.99999999997), nothing more.
    if (micros - rounded).abs() > 1e-6 * rounded.max(1.0) {
        return Err(PriceError::TooPrecise(dollars));
    }
    Ok(rounded as u64)
}

impl Price {
    /// Cost of `usage` in pico-dollars, saturating rather than wrapping.
    pub fn cost_picos(&self, usage: &Usage) -> u64 {
        [
            (usage.input_uncached, self.input),
            (usage.cache_read, self.cache_read),
            (usage.cache_write, self.cache_write),
            (usage.output, self.output),
        ]
        .iter()
        .fold(0u64, |sum, (tokens, price)| {
            sum.saturating_add(tokens.saturating_mul(*price))
        })
    }
}

/// Formats pico-dollars as dollars with 6 decimals (micro-dollar precision), rounding half up.
pub fn format_dollars(picos: u64) -> String {
    let micros = picos / 1_000_000 + u64::from(picos % 1_000_000 >= 500_000);
    format!("${}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_prices() {
        assert_eq!(micros_per_mtok(0.15), Ok(150_000));
        assert_eq!(micros_per_mtok(2.5), Ok(2_500_000));
        assert_eq!(micros_per_mtok(0.075), Ok(75_000));
        assert_eq!(micros_per_mtok(0.0), Ok(0));
        assert_eq!(micros_per_mtok(75.0), Ok(75_000_000));
        assert_eq!(micros_per_mtok(0.000001), Ok(1));
    }

    #[test]
    fn rejects_bad_prices() {
        assert!(matches!(
            micros_per_mtok(-1.0),
            Err(PriceError::NotPositive(_))
        ));
        assert!(matches!(
            micros_per_mtok(f64::NAN),
            Err(PriceError::NotPositive(_))
        ));
        assert!(matches!(
            micros_per_mtok(0.0000001),
            Err(PriceError::TooPrecise(_))
        ));
        assert!(matches!(micros_per_mtok(2e6), Err(PriceError::TooLarge(_))));
    }

    #[test]
    fn cost_is_exact() {
        // gpt-4o prices: $2.50 in, $10 out, $1.25 cached.
        let price = Price {
            input: 2_500_000,
            output: 10_000_000,
            cache_read: 1_250_000,
            cache_write: 0,
        };
        let usage = Usage {
            input_uncached: 1000,
            cache_read: 2000,
            output: 500,
            ..Usage::default()
        };
        // 1000*2.5 + 2000*1.25 + 500*10 = 2500 + 2500 + 5000 = 10000 µ$ per 1M → $0.01
        let picos = price.cost_picos(&usage);
        assert_eq!(picos, 10_000_000_000);
        assert_eq!(format_dollars(picos), "$0.010000");
    }

    #[test]
    fn one_token_at_a_fraction_of_a_micro() {
        let price = Price {
            input: 150_000,
            ..Price::default()
        };
        let usage = Usage {
            input_uncached: 1,
            ..Usage::default()
        };
        assert_eq!(price.cost_picos(&usage), 150_000); // 0.15 µ$
        assert_eq!(format_dollars(150_000), "$0.000000");
        assert_eq!(format_dollars(500_000), "$0.000001");
    }

    #[test]
    fn huge_counts_saturate() {
        let price = Price {
            input: u64::MAX,
            ..Price::default()
        };
        let usage = Usage {
            input_uncached: 2,
            ..Usage::default()
        };
        assert_eq!(price.cost_picos(&usage), u64::MAX);
    }
}
