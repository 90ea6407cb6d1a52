//! An incremental, byte-level decoder for Server-Sent Events.
//!
//! Envoy hands a streamed response to the filter one upstream write at a time, split
//! anywhere: inside a line, inside a `\r\n`, inside a multi-byte UTF-8 character. The
//! decoder therefore works on bytes and only turns a line into text once it is whole,
//! so the events it yields do not depend on where the splits fell.
//!
//! Memory is bounded: a line longer than the cap is not kept; the event it belongs to is
//! reported as [`Event::truncated`] with the lines that did fit, so a caller can tell.

/// Default cap on one line, far above any real provider chunk.
pub const DEFAULT_MAX_LINE: usize = 1 << 20;

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; empty for unnamed (`message`) events.
    pub name: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// A line of this event exceeded the cap and was dropped.
    pub truncated: bool,
}

/// Decoder state carried from one chunk to the next.
#[derive(Debug)]
pub struct Decoder {
    max_line: usize,
    line: Vec<u8>,
    line_overflowed: bool,
    /// The previous chunk ended in `\r`; a leading `\n` belongs to that line end.
    after_cr: bool,
    event: Event,
    has_data: bool,
    /// Bytes fed so far, to tell callers where each event ends in the stream.
    offset: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE)
    }
}

impl Decoder {
    /// A decoder that keeps lines of at most `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line,
            line: Vec::new(),
            line_overflowed: false,
            after_cr: false,
            event: Event::default(),
            has_data: false,
            offset: 0,
        }
    }

    /// Feeds the next bytes of the stream; `on_event` receives each completed event and
    /// the stream offset just past the line end of the blank line that ended it. (After a
    /// `\r`, a following `\n` is only known later; it falls in the next event's range.)
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(Event, u64)) {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    self.offset += 1;
                    continue;
                }
            }
            match rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
                Some(i) => {
                    self.push_line_bytes(&rest[..i]);
                    self.after_cr = rest[i] == b'\r';
                    self.offset += i as u64 + 1;
                    rest = &rest[i + 1..];
                    if let Some(event) = self.end_line() {
                        on_event(event, self.offset);
                    }
                }
                None => {
                    self.push_line_bytes(rest);
                    self.offset += rest.len() as u64;
                    rest = &[];
                }
            }
        }
    }

    /// Ends the stream: an event whose blank line never came is dispatched, as browsers
    /// do not but as providers that end at EOF (Gemini) require.
    pub fn finish(&mut self) -> Option<Event> {
        if !self.line.is_empty() || self.line_overflowed {
            // A final line without a line end still counts.
            let _ = self.end_line();
        }
        self.after_cr = false;
        self.take_event()
    }

    /// Bytes fed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        if self.line_overflowed {
            return;
        }
        if self.line.len() + bytes.len() > self.max_line {
            self.line_overflowed = true;
            self.line = Vec::new();
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    /// Processes the line just ended; returns an event if it was a blank line.
    fn end_line(&mut self) -> Option<Event> {
        if self.line_overflowed {
            self.line_overflowed = false;
            self.event.truncated = true;
            return None;
        }
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            return self.take_event();
        }
        if line[0] == b':' {
            return None; // comment, e.g. `: keep-alive`
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.event.data.push('\n');
                }
                self.event.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"event" => self.event.name = String::from_utf8_lossy(value).into_owned(),
            _ => {} // id, retry and unknown fields do not matter for usage
        }
        None
    }

    fn take_event(&mut self) -> Option<Event> {
        let has_any = self.has_data || self.event.truncated;
        self.has_data = false;
        let event = std::mem::take(&mut self.event);
        has_any.then_some(event)
    }
}

/// Decodes a whole stream at once (tests, fixtures, buffered bodies).
pub fn decode_all(bytes: &[u8]) -> Vec<Event> {
    let mut decoder = Decoder::default();
    let mut events = Vec::new();
    decoder.feed(bytes, |e, _| events.push(e));
    events.extend(decoder.finish());
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, data: &str) -> Event {
        Event {
            name: name.into(),
            data: data.into(),
            truncated: false,
        }
    }

    #[test]
    fn data_only_stream() {
        let events = decode_all(b"data: {\"a\":1}\n\ndata: [DONE]\n\n");
        assert_eq!(events, vec![ev("", "{\"a\":1}"), ev("", "[DONE]")]);
    }

    #[test]
    fn named_events_comments_and_crlf() {
        let events =
            decode_all(b": keep-alive\r\n\r\nevent: ping\r\ndata: {}\r\n\r\nevent:x\rdata:y\r\r");
        assert_eq!(events, vec![ev("ping", "{}"), ev("x", "y")]);
    }

    #[test]
    fn multi_line_data_and_fields_without_colon() {
        let events = decode_all(b"data: a\ndata\ndata:  b\nid: 7\nretry: 10\n\n");
        assert_eq!(events, vec![ev("", "a\n\n b")]);
    }

    #[test]
    fn event_without_data_is_not_dispatched() {
        assert!(decode_all(b"event: lonely\n\n").is_empty());
    }

    #[test]
    fn unterminated_final_event_is_kept() {
        assert_eq!(decode_all(b"data: last"), vec![ev("", "last")]);
        assert_eq!(decode_all(b"data: last\r"), vec![ev("", "last")]);
    }

    #[test]
    fn offsets_point_past_the_blank_line() {
        let mut d = Decoder::default();
        let mut ends = Vec::new();
        d.feed(b"data: a\n\ndata: bb\r\n\r\n", |_, end| ends.push(end));
        assert_eq!(ends, vec![9, 20]);
        assert_eq!(d.offset(), 21);
    }

    #[test]
    fn over_long_line_is_dropped_and_flagged_without_growing() {
        let mut d = Decoder::new(16);
        let mut events = Vec::new();
        let long = format!("data: {}\n", "x".repeat(100));
        d.feed(long.as_bytes(), |e, _| events.push(e));
        assert!(d.line.capacity() <= 16 + 16);
        d.feed(b"data: ok\n\ndata: next\n\n", |e, _| events.push(e));
        assert_eq!(
            events,
            vec![
                Event {
                    name: String::new(),
                    data: "ok".into(),
                    truncated: true
                },
                ev("", "next")
            ]
        );
    }

    #[test]
    fn split_utf8_character_survives() {
        let whole = "data: héllo → 世界\n\n".as_bytes();
        let mut d = Decoder::default();
        let mut events = Vec::new();
        for b in whole {
            d.feed(std::slice::from_ref(b), |e, _| events.push(e));
        }
        assert_eq!(events, vec![ev("", "héllo → 世界")]);
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        fn split_decode(bytes: &[u8], cuts: &[usize]) -> Vec<(Event, u64)> {
            let mut d = Decoder::default();
            let mut out = Vec::new();
            let mut start = 0;
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            for cut in cuts.into_iter().chain([bytes.len()]) {
                d.feed(&bytes[start..cut], |e, end| out.push((e, end)));
                // Envoy's final callback may carry no bytes at all.
                d.feed(&[], |e, end| out.push((e, end)));
                start = cut;
            }
            out.extend(d.finish().map(|e| (e, bytes.len() as u64)));
            out
        }

        fn stream() -> impl Strategy<Value = Vec<u8>> {
            let line = prop_oneof![
                "data: [a-z{}\":, é世]{0,20}".prop_map(String::into_bytes),
                "event: [a-z_.]{1,12}".prop_map(String::into_bytes),
                Just(b": keep-alive".to_vec()),
                Just(b"data: [DONE]".to_vec()),
                Just(Vec::new()),
            ];
            let eol = prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b"\r"[..])];
            proptest::collection::vec((line, eol), 0..30).prop_map(|lines| {
                lines
                    .into_iter()
                    .flat_map(|(mut l, e)| {
                        l.extend_from_slice(e);
                        l
                    })
                    .collect()
            })
        }

        proptest! {
            #[test]
            fn any_split_yields_the_same_events(bytes in stream(), cuts in proptest::collection::vec(any::<usize>(), 0..40)) {
                let whole = split_decode(&bytes, &[]);
                prop_assert_eq!(split_decode(&bytes, &cuts), whole);
            }

            #[test]
            fn one_byte_chunks_yield_the_same_events(bytes in stream()) {
                let cuts: Vec<usize> = (1..bytes.len()).collect();
                prop_assert_eq!(split_decode(&bytes, &cuts), split_decode(&bytes, &[]));
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = decode_all(&bytes);
            }
        }
    }
}
