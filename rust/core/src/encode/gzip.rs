//! gzip for large responses, one bounded chunk at a time: raw chunks of the
//! response go through one deflate stream, and a compressed chunk is handed
//! out as soon as enough output has built up.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

use super::{EncodeError, Response};

#[derive(Debug)]
pub struct Gzip {
    response: Response,
    /// `None` once the stream is finished and its trailer handed out.
    encoder: Option<GzEncoder<Vec<u8>>>,
    raw: Vec<u8>,
}

fn compress_err(e: std::io::Error) -> EncodeError {
    EncodeError::Compress(e.to_string())
}

impl Gzip {
    pub fn new(response: Response, level: u32) -> Gzip {
        Gzip {
            response,
            encoder: Some(GzEncoder::new(Vec::new(), Compression::new(level))),
            raw: Vec::new(),
        }
    }

    pub fn response(&self) -> &Response {
        &self.response
    }

    /// The next compressed chunk: at least `limit` bytes (raw chunks of
    /// `limit` are compressed until that much output is ready) or the end
    /// of the stream; `None` once everything was handed out.
    pub fn next_chunk(&mut self, limit: usize) -> Result<Option<Vec<u8>>, EncodeError> {
        let Some(enc) = self.encoder.as_mut() else {
            return Ok(None);
        };
        while !self.response.is_done() {
            self.raw.clear();
            self.response.fill(&mut self.raw, limit);
            enc.write_all(&self.raw).map_err(compress_err)?;
            if enc.get_ref().len() >= limit {
                return Ok(Some(std::mem::take(enc.get_mut())));
            }
        }
        self.raw = Vec::new();
        let Some(enc) = self.encoder.take() else {
            return Ok(None);
        };
        let out = enc.finish().map_err(compress_err)?;
        Ok(Some(out))
    }
}
