//! A 1 GB CSV through the dashboard's import path: streamed in, streamed through the
//! parser, good rows imported, bad rows reported, memory bounded.

use futures_util::stream;
use loopline::accounts::Role;
use reqwest::{Body, StatusCode, multipart};

use crate::{
    harness::{TestApp, location},
    imports::start_with_guessed_mapping,
};

/// Rows in the file; each carries a long ignored column so the file passes 1 GiB.
const ROWS: usize = 100_000;
const NOTE_BYTES: usize = 10_800;
/// Every this-many rows has an address that is not one.
const BAD_EVERY: usize = 10_000;

fn row(i: usize, note: &str) -> String {
    if i.is_multiple_of(BAD_EVERY) {
        format!("not-an-address-{i},깨진 행 {i},{note}\n")
    } else {
        format!("big{i}@example.kr,대용량 {i},{note}\n")
    }
}

/// The peak resident memory of this process so far (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test]
async fn a_one_gigabyte_file_streams_through_and_imports_its_good_rows() {
    let app = TestApp::spawn().await;
    let (editor, _) = app.signed_in(Role::Editor).await;
    let note = "메모".repeat(NOTE_BYTES / 6);
    let header = "Email,Name,Notes\n".to_string();
    let len = header.len() as u64 + (1..=ROWS).map(|i| row(i, &note).len() as u64).sum::<u64>();
    assert!(len > 1 << 30, "the file is {len} bytes");

    // Generated as it is sent: neither the test nor the server ever holds the file.
    let note_for_stream = note.clone();
    let chunks = stream::iter(
        std::iter::once(header)
            .chain((1..=ROWS).map(move |i| row(i, &note_for_stream)))
            .map(|s| Ok::<_, std::io::Error>(s.into_bytes())),
    );
    let form = multipart::Form::new().part(
        "file",
        multipart::Part::stream_with_length(Body::wrap_stream(chunks), len)
            .file_name("big.csv")
            .mime_str("text/csv")
            .unwrap(),
    );
    let url = editor.url(&format!(
        "/audience/imports?_csrf={}",
        editor.csrf.as_deref().unwrap()
    ));
    let res = editor.http.post(url).multipart(form).send().await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "{}",
        res.text().await.unwrap()
    );
    let target = location(&res);
    let id: i64 = target.rsplit('/').next().unwrap().parse().unwrap();
    let stored: i64 = sqlx::query_scalar(
        "SELECT sum(length(data))::bigint FROM import_chunks WHERE import_id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored as u64, len, "every byte stored");

    // The mapping page guesses email and name and leaves the notes column out.
    let page = start_with_guessed_mapping(&app, &editor, id, "add_update", "대용량").await;
    assert_eq!(page.select("#import-status"), vec!["done"]);
    let bad = ROWS / BAD_EVERY;
    assert_eq!(page.select("#import-added"), vec![(ROWS - bad).to_string()]);
    assert_eq!(page.select("#import-failed"), vec![bad.to_string()]);
    let (count, tagged): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE tag_ids @> ARRAY[(SELECT id FROM tags WHERE name = '대용량')])
         FROM subscribers WHERE email LIKE 'big%@example.kr'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((count, tagged), ((ROWS - bad) as i64, (ROWS - bad) as i64));
    let name: String =
        sqlx::query_scalar("SELECT name FROM subscribers WHERE email = 'big99999@example.kr'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(name, "대용량 99999");

    // The report names each bad row by its line number.
    let csv = editor
        .get(&format!("/audience/imports/{id}/report.csv"))
        .await
        .text()
        .await
        .unwrap();
    let mut r = csv::Reader::from_reader(csv.trim_start_matches('\u{feff}').as_bytes());
    let lines: Vec<String> = r.records().map(|x| x.unwrap()[0].to_string()).collect();
    let expected: Vec<String> = (1..=bad).map(|k| (k * BAD_EVERY + 1).to_string()).collect();
    assert_eq!(lines, expected);

    // Streaming, not buffering: this whole test process (server included) never came
    // near holding the file.
    let peak = peak_rss();
    assert!(
        peak < len / 2,
        "peak resident memory {} MiB for a {} MiB file",
        peak >> 20,
        len >> 20
    );
}
