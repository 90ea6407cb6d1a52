//! A byte-level JSON scanner that reads chosen members of an answer as its bytes pass.
//!
//! A non-streamed answer can be larger than Envoy will buffer (an embeddings answer with
//! hundreds of long vectors), so the filter passes it on chunk by chunk and feeds each
//! chunk here instead of parsing the whole body at the end. The scanner follows the JSON
//! structure without building the document, keeps the raw bytes of chosen top-level
//! members (`usage`) for the parsers in [`crate::usage`], and collects the text of members
//! that hold generated text, for an estimate when no usage comes. Its verdict says whether
//! the whole body was one JSON value; where the chunks were split never changes what it
//! reports.
//!
//! Memory is bounded whatever the input: nesting deeper than [`MAX_DEPTH`] ends the scan
//! (a fixed bit stack, no allocation), a captured member over its limit is dropped and
//! marked [`Member::TooLarge`], and text is bounded by [`OutputText`].

use crate::usage::{self, Format, OutputText, Usage};

/// Deepest nesting followed; deeper input is reported as not JSON. Far above any answer
/// (`serde_json` itself refuses to build values nested deeper than 127).
pub const MAX_DEPTH: u32 = 512;
const STACK_WORDS: usize = (MAX_DEPTH as usize).div_ceil(64);

/// Longest member name compared; longer names never match.
const MAX_NAME: usize = 32;

/// Default bound on one captured member; real `usage` objects are a few hundred bytes.
pub const DEFAULT_CAPTURE_LIMIT: usize = 64 * 1024;

/// Top-level members that carry usage, in every format [`usage::from_body`] reads.
pub const USAGE_MEMBERS: &[&str] = &["usage"];

/// Members whose string values are generated text, at any depth: chat `content`,
/// `refusal` and tool calls' `name` and `arguments` (also Responses' function calls);
/// `text` of completions, Responses and Anthropic parts; `reasoning_content`
/// (DeepSeek, vLLM, xAI), `reasoning` (vLLM, OpenRouter) and Anthropic's `thinking`.
pub const TEXT_MEMBERS: &[&str] = &[
    "content",
    "text",
    "refusal",
    "name",
    "arguments",
    "reasoning_content",
    "reasoning",
    "thinking",
];

/// Members whose object values are generated tool input (Anthropic's `input`): their JSON
/// text is collected as it stands.
pub const RAW_TEXT_MEMBERS: &[&str] = &["input"];

/// What a scanner captures and collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanConfig {
    /// Top-level members whose raw bytes are kept.
    pub capture: &'static [&'static str],
    /// Most bytes kept of one captured member.
    pub capture_limit: usize,
    /// Members, at any depth, whose string values are collected as text.
    pub text: &'static [&'static str],
    /// Members, at any depth, whose object or array values are collected as JSON text.
    pub raw_text: &'static [&'static str],
}

impl ScanConfig {
    /// Usage members and generated text of every supported provider's answers.
    pub const ANSWER: ScanConfig = ScanConfig {
        capture: USAGE_MEMBERS,
        capture_limit: DEFAULT_CAPTURE_LIMIT,
        text: TEXT_MEMBERS,
        raw_text: RAW_TEXT_MEMBERS,
    };
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self::ANSWER
    }
}

/// Why a body is not one JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Nothing but whitespace.
    Empty,
    /// A byte the grammar does not allow there (an invalid escape, a raw control
    /// character in a string, a bad number or literal, a mismatched bracket).
    Syntax,
    /// A string is not valid UTF-8.
    InvalidUtf8,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// The body ended inside a value.
    Truncated,
    /// Something other than whitespace follows the value.
    TrailingBytes,
}

/// Whether the whole body was one JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It was.
    Json,
    /// It was not, for this reason, found at this byte offset.
    NotJson {
        /// What was wrong.
        why: Malformed,
        /// Offset of the byte where it was found (the body's length for `Truncated`).
        at: u64,
    },
}

/// One captured top-level member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Member {
    /// Not in the body.
    #[default]
    Absent,
    /// Its value's raw bytes (the last occurrence, if the name repeats).
    Captured(Vec<u8>),
    /// Its value was larger than the capture limit and was dropped.
    TooLarge,
    /// The body ended, or stopped being JSON, inside its value.
    Unfinished,
}

/// What a finished scan found.
#[derive(Debug, Clone)]
pub struct Scanned {
    /// Whether the body was one JSON value.
    pub verdict: Verdict,
    /// Each configured capture name with what was found for it, in configuration order.
    pub members: Vec<(&'static str, Member)>,
    /// Generated text found in the configured members.
    pub text: OutputText,
    /// Bytes scanned.
    pub bytes: u64,
}

impl Scanned {
    /// The captured members as one object (`{"usage":…}`), which [`usage::from_body`]
    /// reads as it would the whole body.
    pub fn members_body(&self) -> Vec<u8> {
        let mut out = b"{".to_vec();
        for (name, member) in &self.members {
            let Member::Captured(raw) = member else {
                continue;
            };
            if out.len() > 1 {
                out.push(b',');
            }
            // Names come from the configuration; serializing escapes any quote in one.
            out.extend_from_slice(serde_json::to_string(name).unwrap_or_default().as_bytes());
            out.push(b':');
            out.extend_from_slice(raw);
        }
        out.push(b'}');
        out
    }

    /// The usage the answer reported, as [`usage::from_body`] reads it from the whole
    /// body; `None` when the body was not JSON or its usage was over the capture limit.
    pub fn usage(&self, format: Format) -> Option<Usage> {
        if self.verdict != Verdict::Json {
            return None;
        }
        usage::from_body(format, &self.members_body())
    }
}

/// Where the scanner is in the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A value must start: at the beginning, after `:`, after `,` in an array.
    Value,
    /// After `[`: a value or `]`.
    ArrayFirst,
    /// After `{`: a key or `}`.
    ObjectFirst,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value inside a container: `,` or the closing bracket.
    AfterValue,
    /// After the top-level value: only whitespace.
    Done,
    /// Inside a string (a key or a value).
    Str,
    /// After a backslash in a string.
    Escape,
    /// Inside `\uXXXX`, with the digits read so far.
    Hex { digits: u8, code: u16 },
    /// Inside a number.
    Number(Num),
    /// Inside `true`, `false` or `null`, at byte `at` of it.
    Literal { word: &'static [u8], at: u8 },
    /// Not JSON; the rest is ignored.
    Failed,
}

/// Where a number is in `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

impl Num {
    /// The number may end here.
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits)
    }

    /// Inside a run of digits that more digits continue.
    fn in_digits(self) -> bool {
        matches!(self, Num::Int | Num::Frac | Num::ExpDigits)
    }

    /// The state after byte `b`, or `None` when `b` is not part of the number.
    fn next(self, b: u8) -> Option<Num> {
        match (self, b) {
            (Num::Minus, b'0') => Some(Num::Zero),
            (Num::Minus | Num::Int, b'0'..=b'9') => Some(Num::Int),
            (Num::Zero | Num::Int, b'.') => Some(Num::Dot),
            (Num::Dot | Num::Frac, b'0'..=b'9') => Some(Num::Frac),
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Some(Num::Exp),
            (Num::Exp, b'+' | b'-') => Some(Num::ExpSign),
            (Num::Exp | Num::ExpSign | Num::ExpDigits, b'0'..=b'9') => Some(Num::ExpDigits),
            _ => None,
        }
    }
}

/// Where the decoded characters of the current string go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Nowhere: the string is only checked.
    Skip,
    /// The member name buffer (the string is a key).
    Name,
    /// The collected text.
    Text,
}

/// What the member whose key was just read means for its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextRole {
    None,
    /// Collect its value if it is a string.
    Text,
    /// Collect its value if it is a string, or its JSON text if it is a container.
    Raw,
}

/// A container value whose JSON text is being collected.
#[derive(Debug, Clone, Copy)]
struct RawSpan {
    /// Depth of the object holding the member; the value ends when depth returns here.
    depth: u32,
    /// Where the value's bytes start in the current chunk.
    mark: usize,
}

/// Bytes of a UTF-8 character that a chunk boundary split, kept for the next chunk.
#[derive(Debug, Clone, Copy, Default)]
struct Utf8Carry {
    bytes: [u8; 4],
    len: usize,
}

/// A run of bytes as text: a character finished from the previous run, then the valid
/// text that follows, then where an invalid sequence starts, if one does.
#[derive(Default)]
struct Decoded<'a> {
    finished: Option<char>,
    rest: &'a str,
    /// Start of the invalid sequence, counted back from the run's start when it began in
    /// an earlier run (so `invalid_at = -2` is two bytes before the run).
    invalid_at: Option<isize>,
}

impl Utf8Carry {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Decodes `run`, first finishing a character the previous run began; a character
    /// begun at the end of `run` is kept for the next one.
    fn decode<'a>(&mut self, run: &'a [u8]) -> Decoded<'a> {
        let mut run = run;
        let mut finished = None;
        let mut used = 0;
        if self.len > 0 {
            let carried = self.len;
            let width: usize = match self.bytes[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let take = width.saturating_sub(carried).min(run.len());
            let (head, tail) = run.split_at(take);
            let end = carried + take;
            if let Some(slot) = self.bytes.get_mut(carried..end) {
                slot.copy_from_slice(head);
            }
            match std::str::from_utf8(self.bytes.get(..end).unwrap_or_default()) {
                Ok(text) => finished = text.chars().next(),
                // Still a valid beginning: wait for the next run.
                Err(e) if e.error_len().is_none() => {
                    self.len = end;
                    return Decoded::default();
                }
                Err(_) => {
                    return Decoded {
                        invalid_at: Some(-(carried as isize)),
                        ..Decoded::default()
                    };
                }
            }
            self.len = 0;
            run = tail;
            used = take;
        }
        // A character begun at the very end is set aside first, so that the run is
        // checked once (most chunk boundaries inside text split a character).
        let (body, tail) = run.split_at(run.len() - incomplete_tail(run));
        match std::str::from_utf8(body) {
            Ok(rest) => {
                let carried = tail.is_empty() || is_char_start(tail) && self.keep(tail);
                Decoded {
                    finished,
                    rest,
                    invalid_at: (!carried).then_some((used + body.len()) as isize),
                }
            }
            Err(e) => Decoded {
                finished,
                rest: std::str::from_utf8(&body[..e.valid_up_to()]).unwrap_or_default(),
                invalid_at: Some((used + e.valid_up_to()) as isize),
            },
        }
    }

    /// Keeps the beginning of a character (at most 3 bytes); false if it does not fit.
    fn keep(&mut self, tail: &[u8]) -> bool {
        let Some(slot) = self.bytes.get_mut(..tail.len()) else {
            return false;
        };
        slot.copy_from_slice(tail);
        self.len = tail.len();
        true
    }
}

/// Length of the character begun at the end of `run` and not finished there (0 to 3).
fn incomplete_tail(run: &[u8]) -> usize {
    for back in 1..=run.len().min(3) {
        let b = run[run.len() - back];
        // Continuation bytes are 0b10xx_xxxx; the first other byte leads the character.
        if b & 0xC0 != 0x80 {
            let width = match b {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            return if width > back { back } else { 0 };
        }
    }
    0
}

/// `bytes` could begin a valid character (more bytes may finish it).
fn is_char_start(bytes: &[u8]) -> bool {
    matches!(std::str::from_utf8(bytes), Err(e) if e.error_len().is_none())
}

/// Bytes that end a plain run inside a string.
const STRING_STOP: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Length of the run of plain string bytes `bytes` starts with: up to the first `"`, `\`
/// or control character. Eight bytes at a time, as text makes up most string bytes.
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    /// A byte of `x` is below `n` (n <= 128), exactly, from Hacker's Delight / Bit Twiddling Hacks.
    fn has_below(x: u64, n: u8) -> bool {
        x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0
    }
    let mut plain = 0;
    for word in bytes.chunks_exact(8) {
        let mut w = [0; 8];
        w.copy_from_slice(word);
        let w = u64::from_ne_bytes(w);
        if has_below(w, 0x20)
            || has_below(w ^ (ONES * u64::from(b'"')), 1)
            || has_below(w ^ (ONES * u64::from(b'\\')), 1)
        {
            break;
        }
        plain += 8;
    }
    let rest = bytes.get(plain..).unwrap_or_default();
    plain
        + rest
            .iter()
            .position(|&b| STRING_STOP[usize::from(b)])
            .unwrap_or(rest.len())
}

/// JSON's four whitespace bytes.
const SPACE: [bool; 256] = {
    let mut table = [false; 256];
    table[b' ' as usize] = true;
    table[b'\t' as usize] = true;
    table[b'\n' as usize] = true;
    table[b'\r' as usize] = true;
    table
};

fn hex_digit(b: u8) -> Option<u16> {
    match b {
        b'0'..=b'9' => Some(u16::from(b - b'0')),
        b'a'..=b'f' => Some(u16::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u16::from(b - b'A' + 10)),
        _ => None,
    }
}

/// Follows one JSON body fed in chunks; see the module documentation.
#[derive(Debug, Clone)]
pub struct JsonScanner {
    config: ScanConfig,
    state: State,
    failure: Option<(Malformed, u64)>,
    /// Bytes fed before the current chunk.
    offset: u64,
    /// One bit per open container, set for objects.
    stack: [u64; STACK_WORDS],
    depth: u32,
    /// The string being read is a key.
    in_key: bool,
    target: Target,
    carry: Utf8Carry,
    /// A `\uD800`–`\uDBFF` escape waiting for its low half.
    high_surrogate: Option<u16>,
    name: [u8; MAX_NAME],
    name_len: usize,
    name_too_long: bool,
    /// Roles the key just read gives the value that follows.
    pending_capture: Option<usize>,
    pending_text: TextRole,
    members: Vec<Member>,
    /// The capture in progress, and where its bytes start in the current chunk.
    capture: Option<(usize, usize)>,
    raw: Option<RawSpan>,
    raw_carry: Utf8Carry,
    text: OutputText,
}

impl Default for JsonScanner {
    fn default() -> Self {
        Self::new(ScanConfig::ANSWER)
    }
}

impl JsonScanner {
    /// A scanner for one body.
    pub fn new(config: ScanConfig) -> Self {
        Self {
            config,
            state: State::Value,
            failure: None,
            offset: 0,
            stack: [0; STACK_WORDS],
            depth: 0,
            in_key: false,
            target: Target::Skip,
            carry: Utf8Carry::default(),
            high_surrogate: None,
            name: [0; MAX_NAME],
            name_len: 0,
            name_too_long: false,
            pending_capture: None,
            pending_text: TextRole::None,
            members: vec![Member::Absent; config.capture.len()],
            capture: None,
            raw: None,
            raw_carry: Utf8Carry::default(),
            text: OutputText::default(),
        }
    }

    /// Why the body is already known not to be JSON, if it is.
    pub fn malformed(&self) -> Option<Malformed> {
        self.failure.map(|(why, _)| why)
    }

    /// Scans the next bytes of the body, split anywhere.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.state != State::Failed {
            if let Some((_, mark)) = &mut self.capture {
                *mark = 0;
            }
            if let Some(raw) = &mut self.raw {
                raw.mark = 0;
            }
            self.scan(bytes);
            // After a failure, only the bytes before it count.
            let end = match self.failure {
                Some((_, at)) => usize::try_from(at.saturating_sub(self.offset))
                    .unwrap_or(usize::MAX)
                    .min(bytes.len()),
                None => bytes.len(),
            };
            if let Some((slot, mark)) = self.capture {
                self.append_capture(slot, bytes.get(mark..end).unwrap_or_default());
            }
            if let Some(raw) = self.raw {
                self.push_raw(bytes.get(raw.mark..end).unwrap_or_default());
                if self.failure.is_some() {
                    self.raw = None;
                }
            }
        }
        self.offset = self.offset.saturating_add(bytes.len() as u64);
    }

    /// Ends the body and reports what was found.
    pub fn finish(mut self) -> Scanned {
        match self.state {
            State::Failed | State::Done => {}
            State::Number(n) if self.depth == 0 && n.complete() => self.state = State::Done,
            State::Value if self.depth == 0 => self.fail_at(Malformed::Empty, self.offset),
            _ => self.fail_at(Malformed::Truncated, self.offset),
        }
        if let Some((slot, _)) = self.capture.take()
            && let Some(member) = self.members.get_mut(slot)
        {
            *member = Member::Unfinished;
        }
        let verdict = match self.failure {
            None => Verdict::Json,
            Some((why, at)) => Verdict::NotJson { why, at },
        };
        Scanned {
            verdict,
            members: self
                .config
                .capture
                .iter()
                .copied()
                .zip(self.members)
                .collect(),
            text: self.text,
            bytes: self.offset,
        }
    }

    fn fail(&mut self, why: Malformed, index: usize) {
        self.fail_at(why, self.offset.saturating_add(index as u64));
    }

    fn fail_at(&mut self, why: Malformed, at: u64) {
        self.state = State::Failed;
        self.failure = Some((why, at));
    }

    /// Runs the grammar over one chunk; stops early only on failure.
    fn scan(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Str => {
                    let rest = &bytes[i..];
                    let run = plain_run(rest);
                    if run > 0 {
                        if let Some(back) = self.string_run(&rest[..run]) {
                            let at = self.offset.saturating_add(i as u64);
                            let at = at.saturating_add_signed(back as i64);
                            return self.fail_at(Malformed::InvalidUtf8, at);
                        }
                        i += run;
                    }
                    let Some(&b) = bytes.get(i) else { break };
                    if !self.carry.is_empty() {
                        return self.fail(Malformed::InvalidUtf8, i);
                    }
                    i += 1;
                    match b {
                        b'"' => {
                            self.lone_surrogate();
                            self.end_string(bytes, i);
                        }
                        b'\\' => self.state = State::Escape,
                        _ => return self.fail(Malformed::Syntax, i - 1),
                    }
                }
                State::Escape => {
                    let c = match bytes[i] {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            self.state = State::Hex { digits: 0, code: 0 };
                            i += 1;
                            continue;
                        }
                        _ => return self.fail(Malformed::Syntax, i),
                    };
                    i += 1;
                    self.lone_surrogate();
                    self.emit_char(c);
                    self.state = State::Str;
                }
                State::Hex { digits, code } => {
                    let Some(d) = hex_digit(bytes[i]) else {
                        return self.fail(Malformed::Syntax, i);
                    };
                    i += 1;
                    let code = (code << 4) | d;
                    if digits == 3 {
                        self.escaped_code(code);
                        self.state = State::Str;
                    } else {
                        self.state = State::Hex {
                            digits: digits + 1,
                            code,
                        };
                    }
                }
                State::Number(mut n) => {
                    // The bulk of an embeddings answer: each number is read in one go,
                    // its digit runs without going through the grammar.
                    let ended = loop {
                        if n.in_digits() {
                            let rest = &bytes[i..];
                            i += rest
                                .iter()
                                .position(|b| !b.is_ascii_digit())
                                .unwrap_or(rest.len());
                        }
                        let Some(&b) = bytes.get(i) else { break false };
                        match n.next(b) {
                            Some(next) => n = next,
                            None => break true,
                        }
                        i += 1;
                    };
                    if !ended {
                        self.state = State::Number(n);
                    } else if n.complete() {
                        // The byte after a number is the next token's; it is read again.
                        self.end_value(bytes, i);
                    } else {
                        return self.fail(Malformed::Syntax, i);
                    }
                }
                State::Literal { word, at } => {
                    if word.get(usize::from(at)) != Some(&bytes[i]) {
                        return self.fail(Malformed::Syntax, i);
                    }
                    i += 1;
                    if usize::from(at) + 1 == word.len() {
                        self.end_value(bytes, i);
                    } else {
                        self.state = State::Literal { word, at: at + 1 };
                    }
                }
                State::Failed => return,
                structural => {
                    let rest = &bytes[i..];
                    match rest.iter().position(|&b| !SPACE[usize::from(b)]) {
                        Some(skip) => i += skip,
                        None => break,
                    }
                    let b = bytes[i];
                    i += 1;
                    let ok = match structural {
                        State::Value => self.begin_value(b, i - 1),
                        State::ArrayFirst if b == b']' => self.close(bytes, i),
                        State::ArrayFirst => self.begin_value(b, i - 1),
                        State::ObjectFirst if b == b'}' => self.close(bytes, i),
                        State::ObjectFirst | State::Key => self.begin_key(b),
                        State::Colon => {
                            self.state = State::Value;
                            b == b':'
                        }
                        State::AfterValue => self.after_value(b, bytes, i),
                        // Done: the value is over and only whitespace may follow.
                        _ => return self.fail(Malformed::TrailingBytes, i - 1),
                    };
                    if !ok {
                        if self.state != State::Failed {
                            self.fail(Malformed::Syntax, i - 1);
                        }
                        return;
                    }
                }
            }
        }
    }

    /// Starts the value whose first byte `b` is at `index`; false if no value starts so.
    fn begin_value(&mut self, b: u8, index: usize) -> bool {
        if let Some(slot) = self.pending_capture.take() {
            if let Some(member) = self.members.get_mut(slot) {
                *member = Member::Captured(Vec::new());
            }
            self.capture = Some((slot, index));
        }
        let role = std::mem::replace(&mut self.pending_text, TextRole::None);
        self.state = match b {
            b'{' | b'[' => {
                if role == TextRole::Raw {
                    self.raw = Some(RawSpan {
                        depth: self.depth,
                        mark: index,
                    });
                }
                if !self.open(b == b'{') {
                    self.fail(Malformed::TooDeep, index);
                    return false;
                }
                if b == b'{' {
                    State::ObjectFirst
                } else {
                    State::ArrayFirst
                }
            }
            b'"' => {
                self.in_key = false;
                self.target = if role == TextRole::None {
                    Target::Skip
                } else {
                    Target::Text
                };
                State::Str
            }
            b'-' => State::Number(Num::Minus),
            b'0' => State::Number(Num::Zero),
            b'1'..=b'9' => State::Number(Num::Int),
            b't' => State::Literal {
                word: b"true",
                at: 1,
            },
            b'f' => State::Literal {
                word: b"false",
                at: 1,
            },
            b'n' => State::Literal {
                word: b"null",
                at: 1,
            },
            _ => return false,
        };
        true
    }

    fn begin_key(&mut self, b: u8) -> bool {
        self.in_key = true;
        self.target = Target::Name;
        self.name_len = 0;
        self.name_too_long = false;
        self.state = State::Str;
        b == b'"'
    }

    /// The `,` or closing bracket after a value.
    fn after_value(&mut self, b: u8, bytes: &[u8], next: usize) -> bool {
        let in_object = self.in_object();
        match b {
            b',' if in_object => {
                self.state = State::Key;
                true
            }
            b',' => {
                self.state = State::Value;
                true
            }
            b'}' if in_object => self.close(bytes, next),
            b']' if !in_object => self.close(bytes, next),
            _ => false,
        }
    }

    fn open(&mut self, object: bool) -> bool {
        if self.depth >= MAX_DEPTH {
            return false;
        }
        let (word, bit) = ((self.depth / 64) as usize, self.depth % 64);
        if let Some(w) = self.stack.get_mut(word) {
            if object {
                *w |= 1 << bit;
            } else {
                *w &= !(1 << bit);
            }
        }
        self.depth += 1;
        true
    }

    /// The innermost open container is an object.
    fn in_object(&self) -> bool {
        let Some(top) = self.depth.checked_sub(1) else {
            return false;
        };
        let word = self.stack.get((top / 64) as usize).copied().unwrap_or(0);
        word & (1 << (top % 64)) != 0
    }

    /// Closes the innermost container, whose closing bracket ends just before `next`.
    fn close(&mut self, bytes: &[u8], next: usize) -> bool {
        self.depth = self.depth.saturating_sub(1);
        self.end_value(bytes, next);
        true
    }

    /// A value ended just before `end` in this chunk.
    fn end_value(&mut self, bytes: &[u8], end: usize) {
        self.state = if self.depth == 0 {
            State::Done
        } else {
            State::AfterValue
        };
        if self.depth == 1
            && let Some((slot, mark)) = self.capture.take()
        {
            self.append_capture(slot, bytes.get(mark..end).unwrap_or_default());
        }
        if let Some(raw) = self.raw
            && raw.depth == self.depth
        {
            self.push_raw(bytes.get(raw.mark..end).unwrap_or_default());
            self.raw = None;
        }
    }

    /// A string ended; `next` is just past its closing quote.
    fn end_string(&mut self, bytes: &[u8], next: usize) {
        if !self.in_key {
            self.target = Target::Skip;
            return self.end_value(bytes, next);
        }
        self.state = State::Colon;
        self.target = Target::Skip;
        let name = (!self.name_too_long).then(|| &self.name[..self.name_len]);
        let named = |list: &[&str]| name.is_some_and(|n| list.iter().any(|m| m.as_bytes() == n));
        // At depth 1 the container is the top-level value, and keys only occur in objects.
        self.pending_capture = if self.depth == 1 {
            name.and_then(|n| self.config.capture.iter().position(|m| m.as_bytes() == n))
        } else {
            None
        };
        self.pending_text = if self.raw.is_some() {
            // Already collected as part of the enclosing JSON text.
            TextRole::None
        } else if named(self.config.text) {
            TextRole::Text
        } else if named(self.config.raw_text) {
            TextRole::Raw
        } else {
            TextRole::None
        };
    }

    /// Plain bytes inside a string; returns where an invalid UTF-8 sequence starts
    /// (relative to the run, negative when it began in an earlier chunk).
    fn string_run(&mut self, run: &[u8]) -> Option<isize> {
        self.lone_surrogate();
        let decoded = self.carry.decode(run);
        if let Some(c) = decoded.finished {
            self.emit_char(c);
        }
        self.emit(decoded.rest);
        decoded.invalid_at
    }

    /// The code unit of a `\uXXXX` escape: pairs surrogates, replaces lone ones.
    fn escaped_code(&mut self, code: u16) {
        if let Some(high) = self.high_surrogate
            && (0xDC00..=0xDFFF).contains(&code)
        {
            self.high_surrogate = None;
            let c = 0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(code) - 0xDC00);
            self.emit_char(char::from_u32(c).unwrap_or('\u{FFFD}'));
            return;
        }
        self.lone_surrogate();
        if (0xD800..=0xDBFF).contains(&code) {
            self.high_surrogate = Some(code);
        } else {
            // Only a lone low surrogate has no character.
            self.emit_char(char::from_u32(u32::from(code)).unwrap_or('\u{FFFD}'));
        }
    }

    /// A high surrogate not followed by a low one stands for an unknown character.
    fn lone_surrogate(&mut self) {
        if self.high_surrogate.take().is_some() {
            self.emit_char('\u{FFFD}');
        }
    }

    fn emit_char(&mut self, c: char) {
        let mut buf = [0; 4];
        self.emit(c.encode_utf8(&mut buf));
    }

    fn emit(&mut self, s: &str) {
        match self.target {
            Target::Skip => {}
            Target::Text => self.text.push(s),
            Target::Name => {
                let end = self.name_len + s.len();
                match self.name.get_mut(self.name_len..end) {
                    Some(slot) if !self.name_too_long => {
                        slot.copy_from_slice(s.as_bytes());
                        self.name_len = end;
                    }
                    _ => self.name_too_long = true,
                }
            }
        }
    }

    fn append_capture(&mut self, slot: usize, bytes: &[u8]) {
        let limit = self.config.capture_limit;
        let Some(member) = self.members.get_mut(slot) else {
            return;
        };
        if let Member::Captured(raw) = member {
            if raw.len().saturating_add(bytes.len()) > limit {
                *member = Member::TooLarge;
            } else {
                raw.extend_from_slice(bytes);
            }
        }
    }

    fn push_raw(&mut self, bytes: &[u8]) {
        // Every string in these bytes was checked as it was scanned, and the bytes stop at
        // the first invalid one, so only a character split by a chunk boundary is carried.
        let decoded = self.raw_carry.decode(bytes);
        let mut buf = [0; 4];
        if let Some(c) = decoded.finished {
            self.text.push(c.encode_utf8(&mut buf));
        }
        self.text.push(decoded.rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(body: &[u8]) -> Scanned {
        let mut s = JsonScanner::default();
        s.feed(body);
        s.finish()
    }

    fn captured<'a>(scanned: &'a Scanned, name: &str) -> &'a Member {
        &scanned
            .members
            .iter()
            .find(|(n, _)| *n == name)
            .expect("configured")
            .1
    }

    fn not_json(why: Malformed, at: u64) -> Verdict {
        Verdict::NotJson { why, at }
    }

    #[test]
    fn captures_only_top_level_usage() {
        let s = scan(br#"{"a":{"usage":1},"b":[{"usage":2}], "usage" : {"prompt_tokens":3} }"#);
        assert_eq!(s.verdict, Verdict::Json);
        assert_eq!(
            captured(&s, "usage"),
            &Member::Captured(br#"{"prompt_tokens":3}"#.to_vec())
        );
        assert_eq!(s.members_body(), br#"{"usage":{"prompt_tokens":3}}"#);
    }

    #[test]
    fn captures_scalars_exactly_up_to_their_last_byte() {
        for (body, raw) in [
            (&br#"{"usage":12.5e-3,"x":1}"#[..], &b"12.5e-3"[..]),
            (br#"{"usage":-0}"#, b"-0"),
            (br#"{"usage":null}"#, b"null"),
            (br#"{"usage":"a\"b"}"#, br#""a\"b""#),
            (br#"{"usage":[1,[2]] }"#, b"[1,[2]]"),
        ] {
            let s = scan(body);
            assert_eq!(s.verdict, Verdict::Json);
            assert_eq!(
                captured(&s, "usage"),
                &Member::Captured(raw.to_vec()),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_repeated_member_keeps_its_last_value() {
        let s = scan(br#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}"#);
        assert_eq!(
            captured(&s, "usage"),
            &Member::Captured(br#"{"prompt_tokens":2}"#.to_vec())
        );
    }

    #[test]
    fn escaped_names_match_and_long_names_do_not() {
        let s = scan(br#"{"us\u0061ge":7}"#);
        assert_eq!(captured(&s, "usage"), &Member::Captured(b"7".to_vec()));
        let long = format!(r#"{{"usage{}":7}}"#, "x".repeat(MAX_NAME));
        assert_eq!(captured(&scan(long.as_bytes()), "usage"), &Member::Absent);
    }

    #[test]
    fn a_top_level_array_has_no_members() {
        let s = scan(br#"[{"usage":{"prompt_tokens":3}}]"#);
        assert_eq!(s.verdict, Verdict::Json);
        assert_eq!(captured(&s, "usage"), &Member::Absent);
    }

    #[test]
    fn an_oversized_member_is_dropped_and_flagged() {
        // Two captured members: dropping one must keep the other.
        let config = ScanConfig {
            capture: &["usage", "other"],
            ..ScanConfig::ANSWER
        };
        let big = format!(
            r#"{{"usage":{{"pad":"{}"}},"other":{{"n":4}}}}"#,
            "x".repeat(DEFAULT_CAPTURE_LIMIT)
        );
        let mut scanner = JsonScanner::new(config);
        for piece in big.as_bytes().chunks(1000) {
            scanner.feed(piece);
        }
        let s = scanner.finish();
        assert_eq!(s.verdict, Verdict::Json);
        assert_eq!(captured(&s, "usage"), &Member::TooLarge);
        assert_eq!(
            captured(&s, "other"),
            &Member::Captured(br#"{"n":4}"#.to_vec())
        );
        assert_eq!(s.members_body(), br#"{"other":{"n":4}}"#);
    }

    #[test]
    fn a_cut_member_is_unfinished() {
        let s = scan(br#"{"usage":{"prompt_tokens":3"#);
        assert_eq!(s.verdict, not_json(Malformed::Truncated, 27));
        assert_eq!(captured(&s, "usage"), &Member::Unfinished);
        assert_eq!(s.usage(Format::OpenAiChat), None);
    }

    #[test]
    fn text_is_collected_at_any_depth_with_escapes_decoded() {
        let s = scan(
            br#"{"choices":[{"message":{"role":"assistant","content":"a\"b\n\u00e9\ud83d\ude00\/"}}],"id":"content"}"#,
        );
        assert_eq!(s.verdict, Verdict::Json);
        assert_eq!(s.text.sample().pieces.concat(), "a\"b\n\u{e9}\u{1F600}/");
        assert_eq!(
            s.text.sample().total_bytes,
            "a\"b\n\u{e9}\u{1F600}/".len() as u64
        );
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let s = scan(br#"{"text":"\ud800x\udc00\ud800\ud800"}"#);
        assert_eq!(s.verdict, Verdict::Json);
        assert_eq!(
            s.text.sample().pieces.concat(),
            "\u{FFFD}x\u{FFFD}\u{FFFD}\u{FFFD}"
        );
    }

    #[test]
    fn non_string_text_members_are_walked_into_not_collected() {
        let s = scan(
            br#"{"content":[{"type":"text","text":"hi"},{"type":"image"}],"refusal":null,"text":{"format":{"type":"text"}}}"#,
        );
        assert_eq!(s.text.sample().pieces.concat(), "hi");
    }

    #[test]
    fn tool_input_objects_are_collected_once_as_json_text() {
        let s = scan(
            br#"{"content":[{"type":"tool_use","name":"get_weather","input":{"text":"Paris","unit":"c"}}]}"#,
        );
        assert_eq!(s.verdict, Verdict::Json);
        assert_eq!(
            s.text.sample().pieces.concat(),
            r#"get_weather{"text":"Paris","unit":"c"}"#
        );
    }

    #[test]
    fn tool_input_split_inside_a_character_is_whole() {
        let body = r#"{"input":{"city":"Zürich"}}"#.as_bytes();
        let split = body.iter().position(|&b| b >= 0x80).expect("non-ASCII") + 1;
        let mut scanner = JsonScanner::default();
        scanner.feed(&body[..split]);
        scanner.feed(&body[split..]);
        let s = scanner.finish();
        assert_eq!(s.verdict, Verdict::Json);
        assert_eq!(s.text.sample().pieces.concat(), r#"{"city":"Zürich"}"#);
    }

    #[test]
    fn malformed_bodies_are_named_where_they_fail() {
        let cases: [(&[u8], Malformed, u64); 16] = [
            (b"", Malformed::Empty, 0),
            (b" \n ", Malformed::Empty, 3),
            (b"{} x", Malformed::TrailingBytes, 3),
            (b"{}{}", Malformed::TrailingBytes, 2),
            (br#"{"a":1"#, Malformed::Truncated, 6),
            (br#"{"a" 1}"#, Malformed::Syntax, 5),
            (br#"{"a":1,}"#, Malformed::Syntax, 7),
            (br#"[1,]"#, Malformed::Syntax, 3),
            (br#"[1}"#, Malformed::Syntax, 2),
            (br#"{"a":1]"#, Malformed::Syntax, 6),
            (br#"{"a":"\x"}"#, Malformed::Syntax, 7),
            (br#"{"a":"\u12g4"}"#, Malformed::Syntax, 10),
            (b"{\"a\":\"tab\there\"}", Malformed::Syntax, 9),
            (b"{\"a\":\"\xff\"}", Malformed::InvalidUtf8, 6),
            (b"{\"a\":\"\xc3\"}", Malformed::InvalidUtf8, 7),
            (b"nul", Malformed::Truncated, 3),
        ];
        for (body, why, at) in cases {
            assert_eq!(
                scan(body).verdict,
                not_json(why, at),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn numbers_follow_the_json_grammar() {
        for n in [
            "0",
            "-0",
            "12",
            "1.5",
            "-1.25e+10",
            "1E5",
            "0e0",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "1.e5",
            "--1",
            "0x1",
            "1e+",
            "-a",
            "1.5.5",
        ] {
            let body = format!("[{n}]");
            let serde_accepts = serde_json::from_str::<serde_json::Value>(&body).is_ok();
            assert_eq!(
                scan(body.as_bytes()).verdict == Verdict::Json,
                serde_accepts,
                "{n}"
            );
            // At the top level a number ends with the body.
            assert_eq!(
                scan(n.as_bytes()).verdict == Verdict::Json,
                serde_accepts,
                "top-level {n}"
            );
        }
    }

    #[test]
    fn nesting_is_followed_to_the_limit_and_refused_beyond() {
        let depth = MAX_DEPTH as usize;
        let at_limit = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(scan(at_limit.as_bytes()).verdict, Verdict::Json);
        let mixed = format!(
            "{}1{}",
            r#"{"a":["#.repeat(depth / 2),
            "]}".repeat(depth / 2)
        );
        assert_eq!(scan(mixed.as_bytes()).verdict, Verdict::Json);
        let hostile = "[".repeat(100_000);
        let mut scanner = JsonScanner::default();
        for piece in hostile.as_bytes().chunks(4096) {
            scanner.feed(piece);
        }
        assert_eq!(scanner.malformed(), Some(Malformed::TooDeep));
        assert_eq!(
            scanner.finish().verdict,
            not_json(Malformed::TooDeep, MAX_DEPTH as u64)
        );
    }

    #[test]
    fn nothing_is_read_after_a_failure() {
        let mut scanner = JsonScanner::default();
        scanner.feed(br#"{"usage":]"#);
        scanner.feed(br#"{"usage":{"prompt_tokens":3}}"#);
        let s = scanner.finish();
        assert_eq!(s.verdict, not_json(Malformed::Syntax, 9));
        assert_eq!(s.bytes, 39);
        assert_eq!(captured(&s, "usage"), &Member::Unfinished);
    }

    #[test]
    fn a_huge_string_keeps_bounded_text_and_counts_every_byte() {
        let mut scanner = JsonScanner::default();
        scanner.feed(br#"{"choices":[{"text":""#);
        let chunk = "word é ".repeat(8 * 1024);
        let mut total = 0u64;
        for _ in 0..300 {
            scanner.feed(chunk.as_bytes());
            total += chunk.len() as u64;
        }
        scanner.feed(br#""}]}"#);
        let s = scanner.finish();
        assert_eq!(s.verdict, Verdict::Json);
        assert_eq!(s.text.sample().total_bytes, total);
        assert!(
            s.text.sample().pieces.concat().len() <= 64 * 1024,
            "a bounded sample"
        );
    }

    #[test]
    fn usage_is_read_only_from_a_whole_json_body() {
        let body = br#"{"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        let u = scan(body).usage(Format::OpenAiChat).expect("usage");
        assert_eq!((u.input_uncached, u.output), (3, 1));
        let mut trailing = body.to_vec();
        trailing.extend_from_slice(b"garbage");
        assert_eq!(scan(&trailing).usage(Format::OpenAiChat), None);
    }

    #[test]
    fn configured_names_fit_the_name_buffer() {
        let config = ScanConfig::ANSWER;
        for name in config
            .capture
            .iter()
            .chain(config.text)
            .chain(config.raw_text)
        {
            assert!(name.len() <= MAX_NAME, "{name}");
        }
    }
}
