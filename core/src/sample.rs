//! Bounded samples of text for token estimates, and how a count of one is scaled.
//!
//! A gateway that must estimate tokens (the provider reported none, or a stream was cut)
//! cannot keep every prompt and answer whole: bodies reach megabytes and hundreds of
//! streams run at once. It keeps a [`TextSample`] instead: the whole text while it fits
//! the bound, so small calls are counted exactly, and beyond it slices taken at positions
//! the client cannot predict, so that no part of a long text is cheaper to send than
//! another. [`TextSample::tokens`] turns a count of the slices into an estimate of the
//! whole; its bounds are stated there.

use std::hash::{BuildHasher, Hasher};

/// Bytes in one slice of a sampled text. Slices this long hold ~100 tokens of prose, so a
/// token cut at either end of one is ~1% of its count, and the allowance for it small.
pub const SLICE_BYTES: usize = 512;

/// Tokens added per slice for the tokens cut at its ends: a cut can merge what the whole
/// text splits, so a slice may count up to about one token fewer than the part of the
/// whole it covers. Adding one per slice keeps the estimate at or above the truth on
/// average whatever the text (tested), at ~1% over for prose.
pub const SLICE_ALLOWANCE: u64 = 1;

/// A sampled text is never estimated below one token per this many bytes of it: no
/// prompt a client sends in earnest is that sparse (prose is ~4.5 bytes a token in
/// `o200k_base`, code and JSON ~3), so only runs of filler meet the floor, and with it
/// every estimate is at least an eighth of the true count, since a token is at least a byte.
pub const FLOOR_BYTES_PER_TOKEN: u64 = 8;

/// A seed no client can predict: std's hash keys, drawn once per thread from the
/// operating system (WASI's `random_get` inside Envoy) and stepped for every call.
pub fn unpredictable_seed() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// SplitMix64: small and statistically sound, enough to place slices from a secret seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0), without modulo bias worth naming at these sizes.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// The largest char boundary of `s` at or below `i`.
fn floor_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The smallest char boundary of `s` at or above `i`.
fn ceil_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Text to count: whole, or slices of it with the size of the whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextSample {
    /// Pieces tokenized each on its own (tokens never span two pieces).
    pub pieces: Vec<String>,
    /// Bytes of all the text the pieces come from; equal to theirs when it is whole.
    pub total_bytes: u64,
}

impl TextSample {
    /// The texts whole when their bytes fit in `bound`, else about `bound` bytes of
    /// slices placed from `seed`: the texts are split into equal strata, one per slice,
    /// and each slice starts at a uniform offset in its stratum and wraps around within
    /// it, so every byte is equally likely to be kept, wherever a client puts it.
    pub fn of_texts<S: AsRef<str>>(texts: &[S], bound: usize, seed: u64) -> Self {
        let total: u64 = texts.iter().map(|t| t.as_ref().len() as u64).sum();
        if total <= bound as u64 {
            return Self {
                pieces: texts
                    .iter()
                    .map(AsRef::as_ref)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
                total_bytes: total,
            };
        }
        let slices = (bound / SLICE_BYTES).max(1) as u64;
        let slice = SLICE_BYTES as u64;
        let mut rng = Rng(seed);
        // Where stratum `k` starts; at most `total`, so the narrowing is exact.
        let stratum = |k: u64| (u128::from(total) * u128::from(k) / u128::from(slices)) as u64;
        let mut ranges = Vec::with_capacity(slices as usize * 2);
        for j in 0..slices {
            let (lo, hi) = (stratum(j), stratum(j + 1));
            let len = hi - lo;
            if len <= slice {
                ranges.push((lo, hi));
                continue;
            }
            let start = lo + rng.below(len);
            let end = start + slice;
            if end <= hi {
                ranges.push((start, end));
            } else {
                ranges.push((start, hi));
                ranges.push((lo, lo + (end - hi)));
            }
        }
        Self {
            pieces: cut(texts, &ranges),
            total_bytes: total,
        }
    }

    /// Bytes of the pieces.
    pub fn kept_bytes(&self) -> u64 {
        self.pieces.iter().map(|p| p.len() as u64).sum()
    }

    /// The pieces are all of the text.
    pub fn is_whole(&self) -> bool {
        self.kept_bytes() >= self.total_bytes
    }

    /// Tokens of the whole text, with `count` giving the tokens of one piece, counting no
    /// more than `max_counted_bytes` of the pieces (the rest is scaled like unsampled text).
    ///
    /// Whole: the exact sum of the pieces' counts. Sampled: the count of the pieces plus
    /// [`SLICE_ALLOWANCE`] per piece, scaled by the whole's bytes over the pieces', and at
    /// least one token per [`FLOOR_BYTES_PER_TOKEN`] bytes. Bounds, for any text and
    /// bound: never below `true / FLOOR_BYTES_PER_TOKEN` (a token is at least one byte),
    /// never 0 for a non-empty text, and on average over seeds at or above the true count,
    /// since every byte is equally likely to be sampled and the allowance covers the cuts.
    pub fn tokens(&self, max_counted_bytes: usize, mut count: impl FnMut(&str) -> u64) -> u64 {
        let mut budget = max_counted_bytes;
        let mut counted = 0u64;
        let mut counted_bytes = 0u64;
        let mut pieces = 0u64;
        for piece in &self.pieces {
            if budget == 0 {
                break;
            }
            // A piece over the budget is cut, never dropped whole, and ends the counting.
            let end = floor_boundary(piece, budget);
            let kept = &piece[..end];
            if kept.is_empty() {
                break;
            }
            budget -= kept.len();
            counted = counted.saturating_add(count(kept));
            counted_bytes += kept.len() as u64;
            pieces += 1;
            if end < piece.len() {
                break;
            }
        }
        let total = self.total_bytes.max(counted_bytes);
        if total == 0 {
            return 0;
        }
        if counted_bytes >= total {
            return counted.max(1);
        }
        let floor = total.div_ceil(FLOOR_BYTES_PER_TOKEN);
        if counted_bytes == 0 {
            return floor;
        }
        let with_allowance = counted.saturating_add(pieces.saturating_mul(SLICE_ALLOWANCE));
        let scaled = u128::from(with_allowance) * u128::from(total);
        let scaled = scaled.div_ceil(u128::from(counted_bytes));
        u64::try_from(scaled).unwrap_or(u64::MAX).max(floor)
    }
}

/// The pieces of `texts` (taken as one run of bytes) that `ranges` cover, each within
/// one text and cut back to char boundaries.
fn cut<S: AsRef<str>>(texts: &[S], ranges: &[(u64, u64)]) -> Vec<String> {
    let mut starts = Vec::with_capacity(texts.len());
    let mut at = 0u64;
    for t in texts {
        starts.push(at);
        at += t.as_ref().len() as u64;
    }
    let mut pieces = Vec::with_capacity(ranges.len());
    for &(from, to) in ranges {
        let mut i = starts.partition_point(|&s| s <= from).saturating_sub(1);
        let mut from = from;
        while from < to && i < texts.len() {
            let text = texts[i].as_ref();
            let base = starts[i];
            let end = to.min(base + text.len() as u64);
            let a = floor_boundary(text, (from - base) as usize);
            let b = floor_boundary(text, (end - base) as usize);
            if a < b {
                pieces.push(text[a..b].to_owned());
            }
            from = end;
            i += 1;
        }
    }
    pieces
}

/// Collects a text that arrives in parts (a streamed answer) as a [`TextSample`] of at
/// most about `blocks` × [`SLICE_BYTES`]: whole while it fits, beyond that a uniform
/// random choice of its blocks (reservoir sampling), so its length need not be known.
#[derive(Debug, Clone)]
pub struct TextReservoir {
    capacity: usize,
    kept: Vec<String>,
    current: String,
    closed_blocks: u64,
    total_bytes: u64,
    rng: Rng,
}

impl TextReservoir {
    /// A reservoir of `blocks` blocks whose choices follow `seed`.
    pub fn new(blocks: usize, seed: u64) -> Self {
        Self {
            capacity: blocks.max(1),
            kept: Vec::new(),
            current: String::new(),
            closed_blocks: 0,
            total_bytes: 0,
            rng: Rng(seed),
        }
    }

    /// Appends text.
    pub fn push(&mut self, mut text: &str) {
        self.total_bytes = self.total_bytes.saturating_add(text.len() as u64);
        while !text.is_empty() {
            let room = SLICE_BYTES.saturating_sub(self.current.len());
            if text.len() < room {
                self.current.push_str(text);
                return;
            }
            let end = ceil_boundary(text, room);
            self.current.push_str(&text[..end]);
            text = &text[end..];
            let block = std::mem::take(&mut self.current);
            self.close(block);
        }
    }

    fn close(&mut self, block: String) {
        let seen = self.closed_blocks;
        self.closed_blocks += 1;
        if self.kept.len() < self.capacity {
            self.kept.push(block);
            return;
        }
        let j = self.rng.below(seen + 1);
        if let Some(slot) = usize::try_from(j).ok().and_then(|j| self.kept.get_mut(j)) {
            *slot = block;
        }
    }

    /// Nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.total_bytes == 0
    }

    /// Bytes seen, kept or not.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// What was kept: the whole text as one piece if nothing was left out, else the kept
    /// blocks, the unfinished last one taking its chance like any other.
    pub fn sample(&self) -> TextSample {
        let fits = self.closed_blocks < self.capacity as u64
            || (self.closed_blocks == self.capacity as u64 && self.current.is_empty());
        if fits {
            let whole: String = self.kept.concat() + &self.current;
            return TextSample {
                pieces: if whole.is_empty() {
                    vec![]
                } else {
                    vec![whole]
                },
                total_bytes: self.total_bytes,
            };
        }
        let mut pieces = self.kept.clone();
        if !self.current.is_empty() {
            let mut rng = self.rng.clone();
            let j = rng.below(self.closed_blocks + 1);
            if let Some(slot) = usize::try_from(j).ok().and_then(|j| pieces.get_mut(j)) {
                slot.clone_from(&self.current);
            }
        }
        TextSample {
            pieces,
            total_bytes: self.total_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text of numbered 8-byte cells ("0000042|") from `from` to `to`, so a piece tells
    /// which cells it kept.
    fn cells_range(from: usize, to: usize) -> String {
        (from..to).map(|i| format!("{i:07}|")).collect()
    }

    fn cells(n: usize) -> String {
        cells_range(0, n)
    }

    /// The cells fully inside `piece`.
    fn cells_in(piece: &str) -> Vec<usize> {
        piece
            .split('|')
            .filter(|c| c.len() == 7)
            .filter_map(|c| c.parse().ok())
            .collect()
    }

    #[test]
    fn texts_within_the_bound_are_kept_whole() {
        let s = TextSample::of_texts(&["Hello", "", "world"], 10, 1);
        assert_eq!(s.pieces, ["Hello", "world"]);
        assert_eq!((s.total_bytes, s.is_whole()), (10, true));
        // Whole: the exact sum of the pieces' counts, no allowance, no scaling.
        assert_eq!(s.tokens(usize::MAX, |p| p.len() as u64), 10);
    }

    #[test]
    fn long_texts_are_sliced_within_the_bound_at_seeded_positions() {
        let text = cells(100_000); // 800 KB
        let a = TextSample::of_texts(&[&text], 32 * 1024, 1);
        assert_eq!(a.total_bytes, 800_000);
        assert!(!a.is_whole());
        assert!(a.kept_bytes() <= 32 * 1024);
        assert!(a.pieces.len() >= 64);
        assert!(a.pieces.iter().all(|p| text.contains(p.as_str())));
        let b = TextSample::of_texts(&[&text], 32 * 1024, 2);
        assert_ne!(a.pieces, b.pieces, "another seed, other slices");
        assert_eq!(a, TextSample::of_texts(&[&text], 32 * 1024, 1));
    }

    #[test]
    fn every_byte_is_equally_likely_to_be_kept() {
        // Two texts, so slices cross a text boundary too; 8 strata of 1,000 cells.
        let (first, second) = (cells(3_000), cells_range(3_000, 8_000));
        let mut hits = vec![0u32; 8_000];
        let seeds = 2_000;
        for seed in 0..seeds {
            let s = TextSample::of_texts(&[&first, &second], 4096, seed);
            assert!(s.kept_bytes() <= 4096);
            for p in &s.pieces {
                for c in cells_in(p) {
                    hits[c] += 1;
                }
            }
        }
        let sum = |from: usize, to: usize| f64::from(hits[from..to].iter().sum::<u32>());
        // A cell is kept whole with odds (512 - 7) / 8,000 per draw.
        let expected = seeds as f64 * 505.0 / 8_000.0;
        for stratum in 0..8 {
            let mean = sum(stratum * 1000, stratum * 1000 + 1000) / 1000.0;
            assert!(
                (mean - expected).abs() < expected * 0.15,
                "{mean} vs {expected}"
            );
        }
        // Edges of a stratum are kept as often as its middle: nothing cheap to hide there.
        let (start, middle, end) = (sum(1000, 1050), sum(1475, 1525), sum(1950, 2000));
        for edge in [start, end] {
            assert!(
                edge > middle * 0.66 && edge < middle * 1.5,
                "{edge} vs {middle}"
            );
        }
    }

    #[test]
    fn a_sampled_estimate_scales_adds_allowances_and_has_a_floor() {
        let s = TextSample {
            pieces: vec!["abcd".into(), "efgh".into()],
            total_bytes: 80,
        };
        // (1 + 1 + 2 allowances) tokens for 8 of 80 bytes.
        assert_eq!(s.tokens(usize::MAX, |_| 1), 40);
        // A count below one token per 8 bytes meets the floor: 80 / 8.
        let sparse = TextSample {
            pieces: vec!["abcd".into()],
            total_bytes: 8000,
        };
        assert_eq!(sparse.tokens(usize::MAX, |_| 0), 2000);
        assert_eq!(TextSample::default().tokens(usize::MAX, |_| 0), 0);
        let whole = TextSample {
            pieces: vec!["   ".into()],
            total_bytes: 3,
        };
        assert_eq!(
            whole.tokens(usize::MAX, |_| 0),
            1,
            "never 0 for a non-empty text"
        );
    }

    #[test]
    fn a_count_budget_cuts_pieces_and_scales_the_rest() {
        let s = TextSample {
            pieces: vec!["é".repeat(100), "b".repeat(200)],
            total_bytes: 400,
        };
        let mut seen = Vec::new();
        let t = s.tokens(51, |p| {
            seen.push(p.len());
            p.len() as u64
        });
        assert_eq!(seen, [50], "cut at a char boundary, the rest not counted");
        // (50 + 1) tokens for 50 of 400 bytes.
        assert_eq!(t, 408);
    }

    #[test]
    fn reservoir_is_whole_while_it_fits() {
        let mut r = TextReservoir::new(4, 9);
        let text = "x".repeat(4 * SLICE_BYTES);
        r.push(&text[..1000]);
        r.push(&text[1000..]);
        let s = r.sample();
        assert_eq!(s.pieces, [text.as_str()]);
        r.push("y");
        let s = r.sample();
        assert!(!s.is_whole());
        assert_eq!(s.total_bytes, 4 * SLICE_BYTES as u64 + 1);
        assert_eq!(s.pieces.len(), 4);
    }

    #[test]
    fn reservoir_keeps_every_block_with_equal_odds() {
        let text = cells(64 * 64); // 64 blocks of 512 bytes
        let mut firsts = 0;
        let mut lasts = 0;
        let seeds = 2_000;
        for seed in 0..seeds {
            let mut r = TextReservoir::new(8, seed);
            for chunk in text.as_bytes().chunks(100) {
                r.push(std::str::from_utf8(chunk).unwrap());
            }
            let s = r.sample();
            assert!(s.kept_bytes() <= 8 * SLICE_BYTES as u64);
            let kept: Vec<usize> = s.pieces.iter().flat_map(|p| cells_in(p)).collect();
            firsts += usize::from(kept.contains(&0));
            lasts += usize::from(kept.contains(&(64 * 64 - 1)));
        }
        // Odds 8 / 64 each: ~250 of 2,000.
        for hits in [firsts, lasts] {
            assert!((180..=320).contains(&hits), "{hits}");
        }
    }

    #[test]
    fn unpredictable_seeds_differ() {
        assert_ne!(unpredictable_seed(), unpredictable_seed());
    }

    #[cfg(feature = "tokenizer")]
    mod counted {
        use super::super::*;
        use crate::tokens::count;
        use proptest::prelude::*;

        const MODEL: &str = "gpt-4o";

        fn estimate(texts: &[&str], bound: usize, seed: u64) -> u64 {
            TextSample::of_texts(texts, bound, seed).tokens(usize::MAX, |p| count(MODEL, p))
        }

        /// `n` chars drawn from `alphabet` by a fixed generator.
        fn random_text(alphabet: &[char], n: usize, seed: u64) -> String {
            let mut rng = Rng(seed);
            (0..n)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect()
        }

        #[test]
        fn sampled_estimates_of_real_text_are_close_and_not_below() {
            let prose = include_str!("../../README.md").repeat(300_000 / 12_000 + 1);
            let code = include_str!("usage.rs").repeat(300_000 / 20_000 + 1);
            let cjk: Vec<char> = ('\u{4e00}'..'\u{4fff}').collect();
            let chinese = random_text(&cjk, 100_000, 3);
            for text in [&prose, &code, &chinese] {
                let truth = count(MODEL, text) as f64;
                let ratios: Vec<f64> = (0..6)
                    .map(|seed| estimate(&[text], 32 * 1024, seed) as f64 / truth)
                    .collect();
                let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
                assert!(mean >= 1.0, "{ratios:?}");
                assert!(
                    ratios.iter().all(|r| (0.96..=1.08).contains(r)),
                    "{ratios:?}"
                );
            }
        }

        #[test]
        fn dense_text_hidden_in_filler_is_billed_in_full_on_average() {
            // Cheap filler with one dense block a client hopes the sample misses.
            let filler = "the cat sat on the mat. ".repeat(8_000);
            let punct: Vec<char> = "!#$%&()*+,-./:;<=>?@[]^_{|}~0123456789".chars().collect();
            let dense = random_text(&punct, 6_000, 5);
            let texts = [&filler[..96_000], &dense, &filler[96_000..]];
            let truth: u64 = texts.iter().map(|t| count(MODEL, t)).sum();
            let estimates: Vec<u64> = (0..100)
                .map(|seed| estimate(&texts, 8 * 1024, seed))
                .collect();
            let mean = estimates.iter().sum::<u64>() as f64 / estimates.len() as f64;
            assert!(mean >= truth as f64 * 0.97, "mean {mean} vs true {truth}");
            let least = estimates.iter().min().copied().unwrap_or(0);
            assert!(least * FLOOR_BYTES_PER_TOKEN >= truth, "{least} vs {truth}");
        }

        fn texts() -> impl Strategy<Value = Vec<String>> {
            let piece = prop_oneof![
                "[a-z ]{0,400}",
                "[ -~]{0,400}",
                "\\PC{0,200}",
                "[=\\- ]{0,800}",
            ];
            prop::collection::vec(
                prop::collection::vec(piece, 0..30).prop_map(|v| v.concat()),
                1..4,
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            /// For any texts, bound and seed: exact when the texts fit, never 0 for a
            /// non-empty text, never below an eighth of the true count.
            #[test]
            fn estimate_bounds_hold_for_any_text_and_bound(
                texts in texts(),
                bound in 0usize..6000,
                seed in any::<u64>(),
            ) {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let truth: u64 = refs.iter().map(|t| count(MODEL, t)).sum();
                let bytes: usize = refs.iter().map(|t| t.len()).sum();
                let e = estimate(&refs, bound, seed);
                if bytes <= bound {
                    prop_assert_eq!(e, truth);
                }
                if bytes > 0 {
                    prop_assert!(e >= 1);
                }
                prop_assert!(e * FLOOR_BYTES_PER_TOKEN >= truth, "{} vs {}", e, truth);
            }
        }
    }
}
