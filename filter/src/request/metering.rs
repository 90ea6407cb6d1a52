//! The response side of a call: how its body is read, rewritten and metered, and the
//! usage record it leaves.

use super::{Admitted, REQUEST_ID_HEADER};
use crate::host::Host;
use proxy_wasm::types::Action;
use tollgate_core::anthropic::{self, StreamTranslator};
use tollgate_core::budget;
use tollgate_core::errors::{self, ApiError, ErrorKind};
use tollgate_core::headers;
use tollgate_core::json_scan::{JsonScanner, ScanConfig, Verdict};
use tollgate_core::pricing::Price;
use tollgate_core::sample;
use tollgate_core::stream::{Rewrite, StreamRewriter};
use tollgate_core::usage::{self, Estimation, Format, OutputText, Usage};
use tollgate_core::validation;
use tollgate_proto::v1::{Estimate, TextSample, UsageRecord};

/// What an admitted call learns from its response.
#[derive(Default)]
pub(super) struct Response {
    /// The provider's HTTP status; 0 until its headers arrive.
    status: u32,
    mode: ResponseMode,
    usage: Option<Usage>,
    /// The body ended (the client got all of it).
    complete: bool,
    /// The gateway ended the stream: its output passed what the call held.
    cut: bool,
}

/// How the response body is handled.
#[derive(Default)]
pub(super) enum ResponseMode {
    /// Not metered (non-JSON bodies, or no response yet).
    #[default]
    Ignore,
    /// A JSON answer passed on chunk by chunk, as it comes, and read as it passes: it may
    /// be larger than anything Envoy would buffer (a 20 MiB embeddings answer). The
    /// scanner is taken when the answer ends.
    Scan {
        format: Format,
        scanner: Option<Box<JsonScanner>>,
        text: OutputText,
        /// The answer ended and was one JSON value.
        whole: bool,
    },
    /// Buffered whole, then read and rewritten (translated, or an error normalized): the
    /// bodies that must change before the client sees them.
    Buffer {
        format: Format,
        translate: bool,
        normalize_error: bool,
        text: OutputText,
    },
    /// Passed chunk by chunk through a rewriter that meters it.
    Stream(Box<StreamRewriter>),
}

/// Header edits a response mode needs, besides those every response gets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reshape {
    /// The body will change length: its `content-length` goes.
    pub(super) drop_content_length: bool,
    /// The body becomes an OpenAI error: it is JSON whatever the provider said.
    pub(super) json_content_type: bool,
}

/// How a response with `status` and `content_type` is read, and what its headers need.
fn mode_for(
    admitted: &Admitted,
    status: u32,
    content_type: &[u8],
    now_s: u64,
) -> (ResponseMode, Reshape) {
    let kind = admitted.kind;
    let format = kind.usage_format(&admitted.target.endpoint);
    let event_stream = content_type
        .get(..17)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"text/event-stream"));
    let kept = admitted.checked.as_ref();
    if event_stream && status < 300 {
        let rewrite = if kind.translates() {
            Rewrite::FromAnthropic(Box::new(StreamTranslator::new(
                &admitted.target.model,
                now_s,
                kept.is_some_and(|k| k.client_include_usage),
            )))
        } else if kept.is_some_and(|k| k.injected_usage) {
            Rewrite::UnrequestedUsage
        } else {
            Rewrite::Passthrough
        };
        let reshape = Reshape {
            // A stream that may be cut changes length too.
            drop_content_length: !matches!(rewrite, Rewrite::Passthrough)
                || cut_after(admitted).is_some(),
            json_content_type: false,
        };
        let mode = ResponseMode::Stream(Box::new(StreamRewriter::new(format, rewrite)));
        (mode, reshape)
    } else if status < 300 && !kind.translates() && validation::is_json_content_type(content_type) {
        let mode = ResponseMode::Scan {
            format,
            scanner: Some(Box::new(JsonScanner::new(ScanConfig::ANSWER))),
            text: OutputText::default(),
            whole: false,
        };
        (mode, Reshape::default())
    } else if status >= 400 || validation::is_json_content_type(content_type) {
        let translate = kind.translates() && status < 300;
        let normalize_error = status >= 400;
        let reshape = Reshape {
            drop_content_length: translate || normalize_error,
            json_content_type: normalize_error,
        };
        let mode = ResponseMode::Buffer {
            format,
            translate,
            normalize_error,
            text: OutputText::default(),
        };
        (mode, reshape)
    } else {
        (ResponseMode::Ignore, Reshape::default())
    }
}

/// Reads the response status and type, hides headers the client may not see, and picks
/// how the body is read.
pub(super) fn on_response_headers(
    host: &impl Host,
    admitted: &mut Admitted,
    request_id: &str,
    end_of_stream: bool,
    now_ms: u64,
) {
    // All headers in one host call; those the client may not see are removed.
    let mut content_type = Vec::new();
    let mut status = 0;
    for (name, value) in host.response_headers() {
        match name.as_str() {
            ":status" => {
                status = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            }
            "content-type" => content_type = value,
            _ => {}
        }
        if !headers::response_header_allowed(&name) {
            host.set_response_header(&name, None);
        }
    }
    host.set_response_header(REQUEST_ID_HEADER, Some(request_id));
    let (mode, reshape) = mode_for(admitted, status, &content_type, now_ms / 1000);
    if reshape.drop_content_length {
        host.set_response_header("content-length", None);
    }
    if reshape.json_content_type {
        host.set_response_header("content-type", Some("application/json"));
    }
    admitted.response = Response {
        status,
        mode,
        usage: None,
        complete: end_of_stream,
        cut: false,
    };
}

/// One response body callback: metered, and rewritten where the mode says.
pub(super) fn on_response_body(
    host: &impl Host,
    admitted: &mut Admitted,
    body_size: usize,
    end_of_stream: bool,
) -> Action {
    let cap = cut_after(admitted);
    let response = &mut admitted.response;
    match &mut response.mode {
        ResponseMode::Ignore => {}
        ResponseMode::Scan { .. } => {
            let chunk = chunk(host, body_size);
            // Never paused: the answer goes on as it comes, whatever its size.
            response.scan(&chunk, end_of_stream);
        }
        ResponseMode::Buffer { .. } => {
            if !end_of_stream {
                return Action::Pause;
            }
            let body = host.response_body(body_size).unwrap_or_default();
            let now_s = host.now_ms() / 1000;
            if let Some(new_body) = response.finish_buffered(&body, &admitted.target.model, now_s) {
                host.set_response_body(body.len(), &new_body);
            }
        }
        ResponseMode::Stream(rewriter) => {
            let chunk = chunk(host, body_size);
            // Never paused: each chunk goes on at once, rewritten or not. A cut stream is
            // still metered: the provider bills what it generates, sent on or not.
            let out = rewriter.on_chunk(&chunk, end_of_stream);
            let text = rewriter.meter().text();
            if response.cut {
                // Everything after the error event is dropped.
                if body_size > 0 {
                    host.set_response_body(body_size, b"");
                }
            } else if cap.is_some_and(|cap| budget::output_seen(text.deltas(), text.bytes()) > cap)
            {
                response.cut = true;
                host.set_response_body(body_size, &cut_event());
            } else if let Some(out) = out {
                host.set_response_body(body_size, &out);
            }
        }
    }
    if end_of_stream {
        response.complete = true;
    }
    Action::Continue
}

/// The output tokens after which a stream is cut: what the call held, for a call that
/// holds budget money; `None`: never cut.
fn cut_after(admitted: &Admitted) -> Option<u64> {
    if admitted.budget.holds.is_empty() {
        return None;
    }
    admitted.checked.as_ref().map(|k| k.bound.output)
}

/// The SSE event that ends a cut stream: an OpenAI error, which the SDKs raise.
fn cut_event() -> Vec<u8> {
    let error = ApiError {
        status: 429,
        kind: ErrorKind::InsufficientQuota,
        message: "The answer passed the output held for it against its budget, and was \
                  ended there."
            .to_owned(),
        param: None,
        code: Some("insufficient_quota"),
    };
    let mut event = b"data: ".to_vec();
    event.extend_from_slice(&error.body());
    event.extend_from_slice(b"\n\n");
    event
}

/// The response bytes this callback was given (none on a 0-byte final call).
fn chunk(host: &impl Host, size: usize) -> Vec<u8> {
    if size == 0 {
        return Vec::new();
    }
    host.response_body(size).unwrap_or_default()
}

impl Response {
    /// Reads one chunk of a scanned JSON answer; at its end (or when the call ends before
    /// it), takes the usage and text the scanner found.
    fn scan(&mut self, chunk: &[u8], end_of_stream: bool) {
        let ResponseMode::Scan {
            format,
            scanner,
            text,
            whole,
        } = &mut self.mode
        else {
            return;
        };
        let Some(active) = scanner.as_mut() else {
            return;
        };
        active.feed(chunk);
        if !end_of_stream {
            return;
        }
        if let Some(done) = scanner.take() {
            let scanned = done.finish();
            *whole = scanned.verdict == Verdict::Json;
            self.usage = scanned.usage(*format);
            *text = scanned.text;
        }
    }

    /// Reads a whole buffered body; returns what the client gets instead, if it changes.
    fn finish_buffered(&mut self, body: &[u8], model: &str, now_s: u64) -> Option<Vec<u8>> {
        let ResponseMode::Buffer {
            format,
            translate,
            normalize_error,
            text,
        } = &mut self.mode
        else {
            return None;
        };
        self.usage = usage::from_body(*format, body);
        if self.usage.is_none() && self.status < 300 {
            *text = usage::output_text_of_body(*format, body);
        }
        if *translate {
            anthropic::response(body, model, now_s)
        } else if *normalize_error {
            errors::openai_error_body(u16::try_from(self.status).unwrap_or(u16::MAX), body)
        } else {
            None
        }
    }
}

/// The usage to record: as reported, with what the control plane needs to count
/// whatever the report lacks.
fn final_usage(admitted: &Admitted) -> (Usage, Option<Estimate>) {
    let response = &admitted.response;
    let (reported, text, ended) = match &response.mode {
        ResponseMode::Stream(s) => (s.meter().usage(), Some(s.meter().text()), s.meter().ended()),
        // A buffered body is read only once whole.
        ResponseMode::Buffer { text, .. } => (response.usage, Some(text), true),
        ResponseMode::Scan { text, whole, .. } => (response.usage, Some(text), *whole),
        ResponseMode::Ignore => (response.usage, None, true),
    };
    let output_seen = text.is_some_and(|t| !t.is_empty());
    let output = || {
        text.filter(|t| !t.is_empty())
            .map(|t| proto_sample(t.sample()))
    };
    match usage::estimation(reported.as_ref(), ended, response.status, output_seen) {
        Estimation::Reported => (reported.unwrap_or_default(), None),
        Estimation::Free => (Usage::default(), None),
        Estimation::Output => {
            let estimate = Estimate {
                output: output(),
                ..Estimate::default()
            };
            (reported.unwrap_or_default(), Some(estimate))
        }
        Estimation::Whole => {
            let usage = Usage {
                estimated: true,
                ..Usage::default()
            };
            let kept = admitted.checked.as_ref();
            let counted = kept.and_then(|k| k.counted_prompt);
            let estimate = Estimate {
                prompt_overhead: kept.map_or(0, |k| k.prompt.overhead),
                counted_prompt_tokens: counted,
                prompt: match counted {
                    Some(_) => None,
                    None => kept.map(|k| proto_sample(k.prompt.texts.clone())),
                },
                output: output(),
            };
            (usage, Some(estimate))
        }
    }
}

/// Whether the answer was an event stream.
pub(super) fn streamed(admitted: &Admitted) -> bool {
    matches!(admitted.response.mode, ResponseMode::Stream(_))
}

/// Output tokens of the text the client got, by the gateway's count.
fn output_seen(admitted: &Admitted) -> u64 {
    let text = match &admitted.response.mode {
        ResponseMode::Stream(s) => Some(s.meter().text()),
        ResponseMode::Buffer { text, .. } | ResponseMode::Scan { text, .. } => Some(text),
        ResponseMode::Ignore => None,
    };
    text.map_or(0, |t| budget::output_seen(t.deltas(), t.bytes()))
}

/// What a call cost, for settling its budget holds: the reported usage at `price`; for a
/// call the gateway must estimate (or cut), its prompt bound and output seen, and never
/// less than it held, since the control plane's count may be larger than this one.
pub(super) fn settlement_cost(admitted: &Admitted, record: &UsageRecord, price: &Price) -> u64 {
    let reported = Usage {
        input_uncached: record.input_uncached,
        cache_read: record.cache_read,
        cache_write: record.cache_write,
        output: record.output,
        ..Usage::default()
    };
    let cost = price.cost_picos(&reported);
    if record.estimate.is_none() && !record.cut {
        return cost;
    }
    let prompt = (reported.input_total() == 0)
        .then(|| admitted.checked.as_ref().map(|k| k.bound.prompt))
        .flatten();
    let counted = reported.with_counts(prompt, Some(output_seen(admitted)));
    let held = admitted.budget.holds.first().map_or(0, |h| h.amount);
    price.cost_picos(&counted).max(cost).max(held)
}

/// The call's usage record, at log time.
pub(super) fn usage_record(
    admitted: &mut Admitted,
    request_id: &str,
    started_ms: u64,
    now_ms: u64,
) -> UsageRecord {
    // An answer cut before its end still leaves the text the client received.
    admitted.response.scan(&[], true);
    let (usage, estimate) = final_usage(admitted);
    UsageRecord {
        request_id: request_id.to_owned(),
        key_id: admitted.key_id.clone(),
        model: admitted.target.model.clone(),
        provider: admitted.route.provider.clone(),
        status: admitted.response.status,
        input_uncached: usage.input_uncached,
        cache_read: usage.cache_read,
        cache_write: usage.cache_write,
        output: usage.output,
        reasoning: usage.reasoning,
        estimated: usage.estimated,
        partial: usage.partial || !admitted.response.complete || admitted.response.cut,
        finished_at_ms: i64::try_from(now_ms).unwrap_or(i64::MAX),
        duration_ms: u32::try_from(now_ms.saturating_sub(started_ms)).unwrap_or(u32::MAX),
        estimate,
        lease_ids: admitted
            .budget
            .holds
            .iter()
            .map(|h| h.lease_id.clone())
            .collect(),
        cut: admitted.response.cut,
        user: admitted.user.clone(),
        team: admitted.team.clone(),
        // Set when the holds are settled (`budgets::settle`).
        lease_charge_picos: 0,
        done_lease_ids: Vec::new(),
    }
}

fn proto_sample(s: sample::TextSample) -> TextSample {
    TextSample {
        pieces: s.pieces,
        total_bytes: s.total_bytes,
    }
}
