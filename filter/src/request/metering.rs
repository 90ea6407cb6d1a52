//! The response side of a call: how its body is read, rewritten and metered, and the
//! usage record it leaves.

use super::{Admitted, Request};
use crate::clock;
use proxy_wasm::traits::HttpContext;
use tollgate_core::anthropic::{self, StreamTranslator};
use tollgate_core::endpoints::Endpoint;
use tollgate_core::errors;
use tollgate_core::json_scan::{JsonScanner, ScanConfig, Verdict};
use tollgate_core::sample;
use tollgate_core::stream::{Rewrite, StreamRewriter};
use tollgate_core::usage::{self, Estimation, Format, OutputText, Usage};
use tollgate_core::validation;
use tollgate_proto::v1::{Estimate, TextSample, UsageRecord};

/// How the response body is handled.
pub(super) enum ResponseMode {
    /// Not metered (refused calls, non-JSON bodies).
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

impl Request {
    pub(super) fn start_response(&mut self, status: u32, content_type: &[u8]) {
        let Some(admitted) = &self.admitted else {
            return;
        };
        let endpoint = self.endpoint.clone().unwrap_or(Endpoint::ChatCompletions);
        let format = admitted.kind.usage_format(&endpoint);
        let event_stream = content_type
            .get(..17)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"text/event-stream"));
        if event_stream && status < 300 {
            let rewrite = if admitted.kind.translates() {
                Rewrite::FromAnthropic(Box::new(StreamTranslator::new(
                    &self.model,
                    clock::now_ms() / 1000,
                    self.client_include_usage,
                )))
            } else if self.injected_usage {
                Rewrite::UnrequestedUsage
            } else {
                Rewrite::Passthrough
            };
            if !matches!(rewrite, Rewrite::Passthrough) {
                self.set_http_response_header("content-length", None);
            }
            self.response = ResponseMode::Stream(Box::new(StreamRewriter::new(format, rewrite)));
        } else if status < 300
            && !admitted.kind.translates()
            && validation::is_json_content_type(content_type)
        {
            self.response = ResponseMode::Scan {
                format,
                scanner: Some(Box::new(JsonScanner::new(ScanConfig::ANSWER))),
                text: OutputText::default(),
                whole: false,
            };
        } else if status >= 400 || validation::is_json_content_type(content_type) {
            let translate = admitted.kind.translates() && status < 300;
            let normalize_error = status >= 400;
            if translate || normalize_error {
                self.set_http_response_header("content-length", None);
                if normalize_error {
                    self.set_http_response_header("content-type", Some("application/json"));
                }
            }
            self.response = ResponseMode::Buffer {
                format,
                translate,
                normalize_error,
                text: OutputText::default(),
            };
        }
    }

    /// Reads one chunk of a scanned JSON answer; at its end (or when the call ends before
    /// it), takes the usage and text the scanner found.
    pub(super) fn scan_chunk(&mut self, chunk: &[u8], end_of_stream: bool) {
        let ResponseMode::Scan {
            format,
            scanner,
            text,
            whole,
        } = &mut self.response
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

    pub(super) fn finish_buffered(&mut self, body: &[u8]) {
        let ResponseMode::Buffer {
            format,
            translate,
            normalize_error,
            text,
        } = &mut self.response
        else {
            return;
        };
        self.usage = usage::from_body(*format, body);
        if self.usage.is_none() && self.status < 300 {
            *text = usage::output_text_of_body(*format, body);
        }
        let replacement = if *translate {
            anthropic::response(body, &self.model, clock::now_ms() / 1000)
        } else if *normalize_error {
            errors::openai_error_body(self.status as u16, body)
        } else {
            None
        };
        if let Some(new_body) = replacement {
            self.set_http_response_body(0, body.len(), &new_body);
        }
    }

    /// The usage to record: as reported, with what the control plane needs to count
    /// whatever the report lacks.
    fn final_usage(&self) -> (Usage, Option<Estimate>) {
        let (reported, text, ended) = match &self.response {
            ResponseMode::Stream(s) => {
                (s.meter().usage(), Some(s.meter().text()), s.meter().ended())
            }
            // A buffered body is read only once whole.
            ResponseMode::Buffer { text, .. } => (self.usage, Some(text), true),
            ResponseMode::Scan { text, whole, .. } => (self.usage, Some(text), *whole),
            ResponseMode::Ignore => (self.usage, None, true),
        };
        let output_seen = text.is_some_and(|t| !t.is_empty());
        let output = || {
            text.filter(|t| !t.is_empty())
                .map(|t| proto_sample(t.sample()))
        };
        match usage::estimation(reported.as_ref(), ended, self.status, output_seen) {
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
                let prompt = self.prompt.as_ref();
                let estimate = Estimate {
                    prompt_overhead: prompt.map_or(0, |p| p.overhead),
                    counted_prompt_tokens: self.counted_prompt,
                    prompt: match self.counted_prompt {
                        Some(_) => None,
                        None => prompt.map(|p| proto_sample(p.texts.clone())),
                    },
                    output: output(),
                };
                (usage, Some(estimate))
            }
        }
    }

    pub(super) fn usage_record(&self, admitted: &Admitted) -> UsageRecord {
        let (usage, estimate) = self.final_usage();
        let finished = clock::now_ms();
        UsageRecord {
            request_id: self.request_id.clone(),
            key_id: admitted.key_id.clone(),
            model: self.model.clone(),
            provider: admitted.route.provider.clone(),
            status: self.status,
            input_uncached: usage.input_uncached,
            cache_read: usage.cache_read,
            cache_write: usage.cache_write,
            output: usage.output,
            reasoning: usage.reasoning,
            estimated: usage.estimated,
            partial: usage.partial || !self.response_complete,
            finished_at_ms: i64::try_from(finished).unwrap_or(i64::MAX),
            duration_ms: u32::try_from(finished.saturating_sub(self.started_ms))
                .unwrap_or(u32::MAX),
            estimate,
        }
    }
}

fn proto_sample(s: sample::TextSample) -> TextSample {
    TextSample {
        pieces: s.pieces,
        total_bytes: s.total_bytes,
    }
}
