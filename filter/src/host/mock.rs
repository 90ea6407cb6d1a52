//! A host for native tests: records every edit, reply and dispatch, keeps shared data with
//! CAS versions, and has a clock the test sets.
//!
//! A `MockHost` is a handle: clones see the same stream. [`MockHost::worker`] gives another
//! stream sharing the same shared data and clock, as another Envoy worker would.

use super::{GrpcCall, Host, Versioned};
use proxy_wasm::types::{MetricType, Status};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A dispatched gRPC call.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    /// Token returned for it.
    pub token: u32,
    /// Cluster called.
    pub cluster: String,
    /// Method called.
    pub method: String,
    /// The `authorization` metadata sent.
    pub authorization: Vec<u8>,
    /// The request message.
    pub message: Vec<u8>,
}

/// A local reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u32,
    /// Headers sent with it.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// Counts of shared-data operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedStats {
    /// Reads.
    pub gets: usize,
    /// Writes that succeeded.
    pub sets: usize,
    /// Writes refused for a stale version.
    pub mismatches: usize,
}

#[derive(Default)]
struct Shared {
    now_ms: u64,
    /// Reads of the clock, each a host call in Envoy.
    clock_reads: usize,
    entries: HashMap<String, (Vec<u8>, u32)>,
    stats: SharedStats,
    /// A simulated writer on another worker: after each read of this key, it writes once.
    interleave: Option<(String, usize)>,
    refuse_writes: Option<Status>,
    /// Stats by name: their id, kind and counter total; Envoy's are process-wide.
    metrics: Vec<(String, MetricType, i64)>,
    /// Calls to define a stat.
    definitions: usize,
    /// Values recorded into each histogram, by id.
    recorded: HashMap<u32, Vec<u64>>,
}

#[derive(Default)]
struct Stream {
    request_headers: Vec<(String, Vec<u8>)>,
    request_edits: Vec<(String, Option<String>)>,
    request_body: Vec<u8>,
    request_body_set: Option<Vec<u8>>,
    response_headers: Vec<(String, Vec<u8>)>,
    response_edits: Vec<(String, Option<String>)>,
    response_chunk: Vec<u8>,
    response_out: Vec<u8>,
    properties: HashMap<String, Vec<u8>>,
    dispatches: Vec<Dispatch>,
    dispatch_error: Option<Status>,
    next_token: u32,
    grpc_body: Option<Vec<u8>>,
    replies: Vec<Reply>,
    resumes: usize,
    filter_state: HashMap<String, Vec<u8>>,
}

/// The test host.
#[derive(Clone, Default)]
pub struct MockHost {
    shared: Rc<RefCell<Shared>>,
    stream: Rc<RefCell<Stream>>,
}

impl MockHost {
    /// A host with empty shared data at time 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Another worker's stream: same shared data and clock, its own recordings.
    pub fn worker(&self) -> Self {
        Self {
            shared: Rc::clone(&self.shared),
            stream: Rc::default(),
        }
    }

    /// Sets the clock.
    pub fn set_now(&self, ms: u64) {
        self.shared.borrow_mut().now_ms = ms;
    }

    /// The bytes stored under `key`.
    pub fn shared_value(&self, key: &str) -> Option<Vec<u8>> {
        self.shared
            .borrow()
            .entries
            .get(key)
            .map(|(v, _)| v.clone())
    }

    /// Stores `value` under `key` as a writer outside the code under test would.
    pub fn put_shared(&self, key: &str, value: &[u8]) {
        let mut shared = self.shared.borrow_mut();
        let entry = shared.entries.entry(key.to_owned()).or_default();
        entry.0 = value.to_vec();
        entry.1 += 1;
    }

    /// Reads of the clock so far, by every stream of this host.
    pub fn clock_reads(&self) -> usize {
        self.shared.borrow().clock_reads
    }

    /// Shared-data counters so far.
    pub fn shared_stats(&self) -> SharedStats {
        self.shared.borrow().stats
    }

    /// After each of the next `times` reads of `key`, another writer changes it.
    pub fn interleave_writes(&self, key: &str, times: usize) {
        self.shared.borrow_mut().interleave = Some((key.to_owned(), times));
    }

    /// Every shared-data write fails with `status`.
    pub fn refuse_shared_writes(&self, status: Status) {
        self.shared.borrow_mut().refuse_writes = Some(status);
    }

    /// Sets the request headers the stream starts with.
    pub fn set_request_headers(&self, headers: &[(&str, &str)]) {
        self.stream.borrow_mut().request_headers = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
            .collect();
    }

    /// Sets a dynamic metadata value under `metadata.filter_metadata.<ns>.<name>`.
    pub fn set_metadata(&self, namespace: &str, name: &str, value: &[u8]) {
        let path = ["metadata", "filter_metadata", namespace, name].join("/");
        self.stream
            .borrow_mut()
            .properties
            .insert(path, value.to_vec());
    }

    /// Sets a stream property, e.g. `["source", "address"]`.
    pub fn set_property(&self, path: &[&str], value: &[u8]) {
        self.stream
            .borrow_mut()
            .properties
            .insert(path.join("/"), value.to_vec());
    }

    /// Sets the buffered request body.
    pub fn set_request_body_bytes(&self, body: &[u8]) {
        self.stream.borrow_mut().request_body = body.to_vec();
    }

    /// Sets the response headers.
    pub fn set_response_headers(&self, headers: &[(&str, &str)]) {
        self.stream.borrow_mut().response_headers = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
            .collect();
    }

    /// Sets the response bytes of the next body callback.
    pub fn set_response_chunk(&self, chunk: &[u8]) {
        self.stream.borrow_mut().response_chunk = chunk.to_vec();
    }

    /// Dispatches fail with `status` from now on.
    pub fn fail_dispatch(&self, status: Status) {
        self.stream.borrow_mut().dispatch_error = Some(status);
    }

    /// The body the next gRPC answer carries.
    pub fn set_grpc_body(&self, body: &[u8]) {
        self.stream.borrow_mut().grpc_body = Some(body.to_vec());
    }

    /// Every gRPC call dispatched so far.
    pub fn dispatches(&self) -> Vec<Dispatch> {
        self.stream.borrow().dispatches.clone()
    }

    /// Every local reply so far.
    pub fn replies(&self) -> Vec<Reply> {
        self.stream.borrow().replies.clone()
    }

    /// Every request header edit so far, in order.
    pub fn request_edits(&self) -> Vec<(String, Option<String>)> {
        self.stream.borrow().request_edits.clone()
    }

    /// The request header's value now, edits applied.
    pub fn request_header(&self, name: &str) -> Option<String> {
        let stream = self.stream.borrow();
        stream
            .request_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The request body written in place of the client's, if any.
    pub fn request_body_set(&self) -> Option<Vec<u8>> {
        self.stream.borrow().request_body_set.clone()
    }

    /// Every response header edit so far, in order.
    pub fn response_edits(&self) -> Vec<(String, Option<String>)> {
        self.stream.borrow().response_edits.clone()
    }

    /// Every response byte the client got so far: each chunk as passed on or rewritten.
    pub fn response_out(&self) -> Vec<u8> {
        self.stream.borrow().response_out.clone()
    }

    /// Records that the current response chunk went on unchanged.
    pub fn pass_response_chunk(&self) {
        let mut stream = self.stream.borrow_mut();
        let chunk = std::mem::take(&mut stream.response_chunk);
        stream.response_out.extend_from_slice(&chunk);
    }

    /// How many times the request was resumed.
    pub fn resumes(&self) -> usize {
        self.stream.borrow().resumes
    }
}

impl MockHost {
    /// A counter's total, if it was ever defined.
    pub fn metric(&self, name: &str) -> Option<i64> {
        let shared = self.shared.borrow();
        shared
            .metrics
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, total)| *total)
    }

    /// How many times a stat was defined.
    pub fn metric_definitions(&self) -> usize {
        self.shared.borrow().definitions
    }

    /// The values recorded into histogram `name`.
    pub fn recorded(&self, name: &str) -> Vec<u64> {
        let shared = self.shared.borrow();
        let id = shared.metrics.iter().position(|(n, _, _)| n == name);
        id.and_then(|id| u32::try_from(id).ok())
            .and_then(|id| shared.recorded.get(&id).cloned())
            .unwrap_or_default()
    }

    /// What the stream left in its filter state under `key`.
    pub fn filter_state(&self, key: &str) -> Option<Vec<u8>> {
        self.stream.borrow().filter_state.get(key).cloned()
    }
}

fn edit(headers: &mut Vec<(String, Vec<u8>)>, name: &str, value: Option<&str>) {
    headers.retain(|(n, _)| n != name);
    if let Some(v) = value {
        headers.push((name.to_owned(), v.as_bytes().to_vec()));
    }
}

impl Host for MockHost {
    fn now_ms(&self) -> u64 {
        let mut shared = self.shared.borrow_mut();
        shared.clock_reads += 1;
        shared.now_ms
    }

    fn shared_data(&self, key: &str) -> Result<Versioned, Status> {
        let mut shared = self.shared.borrow_mut();
        shared.stats.gets += 1;
        let found = shared.entries.get(key).cloned();
        if let Some((k, times)) = shared.interleave.as_mut()
            && k == key
            && *times > 0
        {
            *times -= 1;
            let entry = shared.entries.entry(key.to_owned()).or_default();
            // An entry that expired long ago: a stale write the loop must replace.
            entry.0 = 0u64.to_be_bytes().to_vec();
            entry.1 += 1;
        }
        Ok(match found {
            Some((value, version)) => (Some(value), Some(version)),
            None => (None, Some(0)),
        })
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
        let mut shared = self.shared.borrow_mut();
        if let Some(status) = shared.refuse_writes {
            return Err(status);
        }
        let version = shared.entries.get(key).map_or(0, |(_, v)| *v);
        if cas.is_some_and(|c| c != version) {
            shared.stats.mismatches += 1;
            return Err(Status::CasMismatch);
        }
        shared.stats.sets += 1;
        shared
            .entries
            .insert(key.to_owned(), (value.to_vec(), version + 1));
        Ok(())
    }

    fn dispatch_grpc(&self, call: &GrpcCall<'_>) -> Result<u32, Status> {
        let mut stream = self.stream.borrow_mut();
        if let Some(status) = stream.dispatch_error {
            return Err(status);
        }
        stream.next_token += 1;
        let token = stream.next_token;
        let authorization = call
            .metadata
            .iter()
            .find(|(n, _)| *n == "authorization")
            .map(|(_, v)| v.to_vec())
            .unwrap_or_default();
        stream.dispatches.push(Dispatch {
            token,
            cluster: call.cluster.to_owned(),
            method: call.method.to_owned(),
            authorization,
            message: call.message.to_vec(),
        });
        Ok(token)
    }

    fn grpc_response_body(&self, size: usize) -> Option<Vec<u8>> {
        let body = self.stream.borrow_mut().grpc_body.take()?;
        Some(body[..size.min(body.len())].to_vec())
    }

    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        self.stream.borrow_mut().replies.push(Reply {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_vec(),
        });
    }

    fn request_headers(&self) -> Vec<(String, Vec<u8>)> {
        self.stream.borrow().request_headers.clone()
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let mut stream = self.stream.borrow_mut();
        edit(&mut stream.request_headers, name, value);
        stream
            .request_edits
            .push((name.to_owned(), value.map(str::to_owned)));
    }

    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        let stream = self.stream.borrow();
        Some(stream.request_body[..size.min(stream.request_body.len())].to_vec())
    }

    fn set_request_body(&self, _size: usize, body: &[u8]) {
        self.stream.borrow_mut().request_body_set = Some(body.to_vec());
    }

    fn response_headers(&self) -> Vec<(String, Vec<u8>)> {
        self.stream.borrow().response_headers.clone()
    }

    fn set_response_header(&self, name: &str, value: Option<&str>) {
        let mut stream = self.stream.borrow_mut();
        edit(&mut stream.response_headers, name, value);
        stream
            .response_edits
            .push((name.to_owned(), value.map(str::to_owned)));
    }

    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        let stream = self.stream.borrow();
        Some(stream.response_chunk[..size.min(stream.response_chunk.len())].to_vec())
    }

    fn set_response_body(&self, _size: usize, body: &[u8]) {
        self.stream.borrow_mut().response_chunk = body.to_vec();
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.stream
            .borrow()
            .properties
            .get(&path.join("/"))
            .cloned()
    }

    fn set_filter_state(&self, key: &str, value: &[u8]) {
        self.stream
            .borrow_mut()
            .filter_state
            .insert(key.to_owned(), value.to_vec());
    }

    fn define_metric(&self, kind: MetricType, name: &str) -> Option<u32> {
        let mut shared = self.shared.borrow_mut();
        shared.definitions += 1;
        let id = match shared.metrics.iter().position(|(n, _, _)| n == name) {
            Some(id) => id,
            None => {
                shared.metrics.push((name.to_owned(), kind, 0));
                shared.metrics.len() - 1
            }
        };
        u32::try_from(id).ok()
    }

    fn increment_metric(&self, id: u32, by: i64) {
        let mut shared = self.shared.borrow_mut();
        let metric = usize::try_from(id)
            .ok()
            .and_then(|id| shared.metrics.get_mut(id))
            .expect("incremented a stat never defined");
        assert_eq!(metric.1, MetricType::Counter, "incremented a non-counter");
        metric.2 += by;
    }

    fn record_metric(&self, id: u32, value: u64) {
        self.shared
            .borrow_mut()
            .recorded
            .entry(id)
            .or_default()
            .push(value);
    }

    fn resume_request(&self) {
        self.stream.borrow_mut().resumes += 1;
    }
}
