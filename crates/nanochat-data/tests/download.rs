//! Shard download against a local HTTP server: a truncated transfer is detected and retried,
//! a 404 and a non-parquet body fail with the URL named after all attempts, nothing partial
//! is left behind, and a second run skips what is already there.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use nanochat_data::dataset::download::{
    DownloadOptions, ShardSource, download_shards, shard_file_name,
};
use nanochat_data::dataset::{Shard, list_parquet_files};
use parquet::arrow::ArrowWriter;

fn parquet_bytes(docs: &[&str]) -> Vec<u8> {
    let array: ArrayRef = Arc::new(StringArray::from(docs.to_vec()));
    let batch = RecordBatch::try_from_iter([("text", array)]).unwrap();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

/// Serves `/shard_00000.parquet` truncated on the first request and whole afterwards,
/// `/shard_00001.parquet` whole, `/shard_00003.parquet` as garbage, anything else 404.
fn serve() -> (String, Arc<Mutex<HashMap<String, usize>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let counter = hits.clone();
    let good = parquet_bytes(&["hello world", "second document"]);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            reader.read_line(&mut line).unwrap();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let n = {
                let mut c = counter.lock().unwrap();
                let e = c.entry(path.clone()).or_insert(0);
                *e += 1;
                *e
            };
            let (status, body, send): (&str, Vec<u8>, usize) = match path.as_str() {
                "/data/shard_00000.parquet" if n == 1 => ("200 OK", good.clone(), good.len() / 2),
                "/data/shard_00000.parquet" | "/data/shard_00001.parquet" => {
                    ("200 OK", good.clone(), good.len())
                }
                "/data/shard_00003.parquet" => ("200 OK", b"not parquet".to_vec(), 11),
                _ => ("404 Not Found", b"nope".to_vec(), 4),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body[..send]);
            let _ = stream.flush();
        }
    });
    (format!("http://{addr}/data"), hits)
}

fn opts() -> DownloadOptions {
    DownloadOptions {
        workers: 2,
        attempts: 3,
        backoff: Duration::from_millis(10),
        timeout: Duration::from_secs(10),
    }
}

#[test]
fn truncated_transfer_is_retried_and_files_verified() {
    let (base, hits) = serve();
    let source = ShardSource {
        base_url: base,
        max_shard: 1,
    };
    let dir = tempfile::tempdir().unwrap();
    let indices = source.indices(None);
    assert_eq!(indices, vec![0, 1]);
    let report = download_shards(&source, &indices, dir.path(), &opts()).unwrap();
    assert_eq!(report.downloaded, vec![0, 1]);
    assert_eq!(
        report.retries, 1,
        "the truncated first transfer was retried once"
    );
    assert_eq!(hits.lock().unwrap()["/data/shard_00000.parquet"], 2);
    for i in indices {
        let shard = Shard::open(&dir.path().join(shard_file_name(i))).unwrap();
        assert_eq!(
            shard.read_row_group(0).unwrap(),
            vec!["hello world", "second document"]
        );
    }
    assert_eq!(list_parquet_files(dir.path()).unwrap().len(), 2);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "no partial file left"
    );
    // A second run fetches nothing.
    let again = download_shards(&source, &[0, 1], dir.path(), &opts()).unwrap();
    assert_eq!(again.skipped, vec![0, 1]);
    assert!(again.downloaded.is_empty());
}

#[test]
fn missing_and_corrupt_shards_fail_with_the_url() {
    let (base, hits) = serve();
    let source = ShardSource {
        base_url: base,
        max_shard: 3,
    };
    let dir = tempfile::tempdir().unwrap();
    let err = download_shards(&source, &[2], dir.path(), &opts()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("shard_00002.parquet") && msg.contains("3 attempts"),
        "{msg}"
    );
    assert_eq!(hits.lock().unwrap()["/data/shard_00002.parquet"], 3);
    let err = download_shards(&source, &[3], dir.path(), &opts()).unwrap_err();
    assert!(err.to_string().contains("not a readable parquet"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing left behind"
    );
}
