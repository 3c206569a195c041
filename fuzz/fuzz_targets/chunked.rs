//! Chunked bodies (RFC 9112 §7.1): `ChunkedState::feed`/`feed_with` over the
//! input cut at arbitrary points, against a reference decoder written here
//! straight from the grammar, and against `codec::decode_chunked`.
//!
//! Properties: never panics; whatever the cuts, the state machine accepts,
//! refuses or waits exactly when the reference does, ends the body at the
//! same byte with the same payload, and refuses for the same reason as
//! `decode_chunked`; `data` counts exactly the payload bytes; a refusal
//! stays a refusal; the `Dechunker` that passes a body on to HTTP/2 gives
//! the same payload and exactly the reference's trailer fields.
//!
//! Input: byte 0 picks the trailer limit, byte 1 seeds the cut points, the
//! rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmesh_engine::http1::codec::{decode_chunked, is_tchar, ChunkError, ChunkedState};
use ringmesh_engine::http2::proxy::Dechunker;

const TRAILER_LIMITS: [usize; 6] = [0, 1, 7, 32, 300, 16 * 1024];
/// What the state machine allows on one chunk-size line from the first ';'.
const MAX_EXT: usize = 4096;
const MAX_DIGITS: usize = 16;

fuzz_target!(|input: &[u8]| {
    let [limit_sel, seed, body @ ..] = input else {
        return;
    };
    let max_trailer = TRAILER_LIMITS[usize::from(*limit_sel) % TRAILER_LIMITS.len()];

    let reference = reference(body, max_trailer);
    let whole = run(body, &[body.len()], max_trailer);
    let bytewise = run(body, &vec![1; body.len()], max_trailer);
    let cuts = cuts(*seed, body.len());
    let split = run(body, &cuts, max_trailer);

    for got in [&whole, &bytewise, &split] {
        match (&reference, got) {
            (Outcome::Done(p, n), Outcome::Done(q, m)) => {
                assert_eq!(n, m, "body ends at {n} (reference), state machine says {m}");
                assert_eq!(p, q, "payload differs");
            }
            (Outcome::More(p), Outcome::More(q)) => assert_eq!(p, q, "partial payload differs"),
            (Outcome::Bad, Outcome::Refused(_)) => {}
            (r, g) => panic!("reference: {r:?}, state machine: {g:?} (cuts {cuts:?})"),
        }
    }
    // The reason does not depend on where the input was cut.
    assert_eq!(whole, bytewise);
    assert_eq!(whole, split);

    // The de-chunker towards HTTP/2 (h1_body_to_h2): same payload and end,
    // and the trailer fields the reference read, whatever the cuts.
    if let Outcome::Done(payload, n) = &whole {
        for pieces in [&[body.len()][..], &cuts, &vec![1; body.len()]] {
            let mut d = Dechunker::new(max_trailer);
            let mut data = Vec::new();
            let mut at = 0;
            for &len in pieces {
                let (used, done) = d
                    .feed(&body[at..at + len], &mut data)
                    .expect("accepted above");
                at += used;
                if done {
                    break;
                }
            }
            assert!(d.is_done() && at == *n && data == *payload);
            let mut got: Vec<(Vec<u8>, Vec<u8>)> = d
                .trailers()
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
            let mut want = reference_trailers(body, max_trailer);
            got.sort();
            want.sort();
            assert_eq!(got, want, "trailers (cuts {pieces:?})");
        }
    }

    // decode_chunked: same verdict, same reason.
    match (decode_chunked(body, max_trailer), &whole) {
        (Ok(Some((p, n))), Outcome::Done(q, m)) => assert!(p == *q && n == *m),
        (Ok(None), Outcome::More(_)) => {}
        (Err(e), Outcome::Refused(f)) => assert_eq!(e, *f, "decode_chunked's reason"),
        (d, s) => panic!("decode_chunked: {d:?}, state machine: {s:?}"),
    }
});

#[derive(Debug, PartialEq)]
enum Outcome {
    /// The body ended after this many bytes with this payload.
    Done(Vec<u8>, usize),
    /// All input belongs to the body, which has not ended; payload so far.
    More(Vec<u8>),
    Refused(ChunkError),
    /// Reference only: refused (the reference does not name reasons).
    Bad,
}

/// Piece lengths that add up to `len`, from a small xorshift seeded by `seed`.
fn cuts(seed: u8, len: usize) -> Vec<usize> {
    let mut x = u32::from(seed) | 0x100;
    let mut out = Vec::new();
    let mut left = len;
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = (x as usize % 24 + 1).min(left);
        out.push(n);
        left -= n;
    }
    out
}

fn run(body: &[u8], pieces: &[usize], max_trailer: usize) -> Outcome {
    let mut st = ChunkedState::new(max_trailer);
    let mut payload = Vec::new();
    let mut at = 0;
    for &n in pieces {
        let piece = &body[at..at + n];
        let before = payload.len();
        match st.feed_with(piece, |d| payload.extend_from_slice(d)) {
            Ok(p) => {
                assert_eq!(p.data, payload.len() - before, "data count");
                assert!(p.consumed <= piece.len());
                assert_eq!(p.done, st.is_done());
                if p.done {
                    // A finished body takes nothing more.
                    let again = st.feed(b"0\r\n\r\n").expect("done stays done");
                    assert_eq!((again.consumed, again.done), (0, true));
                    return Outcome::Done(payload, at + p.consumed);
                }
                assert_eq!(p.consumed, piece.len(), "unfinished body left bytes");
            }
            Err(e) => {
                // A refused body stays refused.
                assert_eq!(st.feed(b"0\r\n\r\n"), Err(e));
                return Outcome::Refused(e);
            }
        }
        at += n;
    }
    // `feed` (no callback) agrees on the same input in one call.
    let mut plain = ChunkedState::new(max_trailer);
    let p = plain.feed(body).expect("feed refuses what feed_with took");
    assert!(!p.done && p.consumed == body.len() && p.data == payload.len());
    Outcome::More(payload)
}

// ---------------------------------------------------------------------------
// The reference: the grammar of RFC 9112 §7.1, with the state machine's
// stricter choices (no whitespace around ';' or '=', at most 16 size digits,
// extensions at most 4096 bytes from the first ';', no obs-fold in trailers,
// trailer field lines counted against the limit with their CRLF).
// ---------------------------------------------------------------------------

/// The trailer fields of a body the reference accepts: lower-case names,
/// values without surrounding whitespace.
fn reference_trailers(body: &[u8], max_trailer: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut r = Reader {
        b: body,
        at: 0,
        fields: Vec::new(),
    };
    let mut payload = Vec::new();
    if chunks(&mut r, &mut payload)
        .and_then(|()| trailers(&mut r, max_trailer))
        .is_err()
    {
        unreachable!("only called for accepted bodies");
    }
    r.fields
}

enum Stop {
    /// Ran out of input: the body may still be fine.
    More,
    Bad,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    /// Trailer fields read: (lower-case name, trimmed value).
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Reader<'_> {
    fn peek(&self) -> Result<u8, Stop> {
        self.b.get(self.at).copied().ok_or(Stop::More)
    }

    fn expect(&mut self, c: u8) -> Result<(), Stop> {
        if self.peek()? != c {
            return Err(Stop::Bad);
        }
        self.at += 1;
        Ok(())
    }

    fn crlf(&mut self) -> Result<(), Stop> {
        self.expect(b'\r')?;
        self.expect(b'\n')
    }
}

fn hex(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}

fn qdtext(b: u8) -> bool {
    b == b'\t'
        || b == b' '
        || b == 0x21
        || (0x23..=0x5b).contains(&b)
        || (0x5d..=0x7e).contains(&b)
        || b >= 0x80
}

fn reference(body: &[u8], max_trailer: usize) -> Outcome {
    let mut r = Reader {
        b: body,
        at: 0,
        fields: Vec::new(),
    };
    let mut payload = Vec::new();
    match chunks(&mut r, &mut payload).and_then(|()| trailers(&mut r, max_trailer)) {
        Ok(()) => Outcome::Done(payload, r.at),
        Err(Stop::More) => Outcome::More(payload),
        Err(Stop::Bad) => Outcome::Bad,
    }
}

/// Every chunk through the last-chunk line.
fn chunks(r: &mut Reader<'_>, payload: &mut Vec<u8>) -> Result<(), Stop> {
    loop {
        let mut size: u64 = 0;
        let mut digits = 0;
        while let Some(v) = hex(r.peek()?) {
            digits += 1;
            if digits > MAX_DIGITS {
                return Err(Stop::Bad);
            }
            size = size * 16 + v;
            r.at += 1;
        }
        if digits == 0 {
            return Err(Stop::Bad);
        }
        extensions(r)?;
        r.crlf()?;
        if size == 0 {
            return Ok(());
        }
        let rest = &r.b[r.at..];
        match usize::try_from(size) {
            Ok(n) if n <= rest.len() => {
                payload.extend_from_slice(&rest[..n]);
                r.at += n;
            }
            _ => {
                payload.extend_from_slice(rest);
                r.at = r.b.len();
                return Err(Stop::More);
            }
        }
        r.crlf()?;
    }
}

/// `*( ";" token [ "=" ( token / quoted-string ) ] )`, at most MAX_EXT bytes.
fn extensions(r: &mut Reader<'_>) -> Result<(), Stop> {
    let start = r.at;
    // Takes the byte at the cursor as part of the extensions.
    let take = |r: &mut Reader<'_>| {
        if r.at + 1 - start > MAX_EXT {
            return Err(Stop::Bad);
        }
        r.at += 1;
        Ok(())
    };
    let token = |r: &mut Reader<'_>| -> Result<(), Stop> {
        if !is_tchar(r.peek()?) {
            return Err(Stop::Bad);
        }
        while is_tchar(r.peek()?) {
            take(r)?;
        }
        Ok(())
    };
    while r.peek()? == b';' {
        take(r)?;
        token(r)?;
        if r.peek()? == b'=' {
            take(r)?;
            if r.peek()? == b'"' {
                take(r)?;
                loop {
                    match r.peek()? {
                        b'"' => {
                            take(r)?;
                            break;
                        }
                        b'\\' => {
                            take(r)?;
                            let b = r.peek()?;
                            if !(b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80)
                            {
                                return Err(Stop::Bad);
                            }
                            take(r)?;
                        }
                        b if qdtext(b) => take(r)?,
                        _ => return Err(Stop::Bad),
                    }
                }
            } else {
                token(r)?;
            }
        }
    }
    Ok(())
}

/// `*( field-line CRLF ) CRLF`; field lines (CRLF included) count against
/// `max`, the final CRLF does not.
fn trailers(r: &mut Reader<'_>, max: usize) -> Result<(), Stop> {
    let mut used = 0usize;
    let mut take = |r: &mut Reader<'_>| {
        used += 1;
        if used > max {
            return Err(Stop::Bad);
        }
        r.at += 1;
        Ok(())
    };
    loop {
        if r.peek()? == b'\r' {
            return r.crlf();
        }
        if !is_tchar(r.peek()?) {
            return Err(Stop::Bad);
        }
        let name_at = r.at;
        while is_tchar(r.peek()?) {
            take(r)?;
        }
        let name = r.b[name_at..r.at].to_ascii_lowercase();
        if r.peek()? != b':' {
            return Err(Stop::Bad);
        }
        take(r)?;
        let value_at = r.at;
        loop {
            match r.peek()? {
                b'\r' => break,
                b'\t' | 0x20..=0x7e | 0x80..=0xff => take(r)?,
                _ => return Err(Stop::Bad),
            }
        }
        let value = r.b[value_at..r.at].trim_ascii().to_vec();
        r.fields.push((name, value));
        take(r)?;
        if r.peek()? != b'\n' {
            return Err(Stop::Bad);
        }
        take(r)?;
    }
}
