//! Reading instances: streaming JSONL with per-line errors, TinyZero fields, and Parquet.

use std::io::Write;

use flywheel_datasets::{load_task, read_instances, InstanceError};

#[test]
fn malformed_lines_are_reported_and_skipped_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cd.jsonl");
    let mut f = std::fs::File::create(&path).expect("create");
    writeln!(f, r#"{{"nums":[3,5],"target":8}}"#).expect("write");
    writeln!(f, "not json").expect("write");
    writeln!(f).expect("write");
    writeln!(f, r#"{{"nums":[3,5]}}"#).expect("write");
    writeln!(f, r#"{{"nums":"3,5","target":8}}"#).expect("write");
    writeln!(f, r#"{{"nums":[3,-5],"target":8}}"#).expect("write");
    writeln!(f, r#"{{"id":"mine","nums":[3.0,5],"target":8.0}}"#).expect("write");
    writeln!(
        f,
        r#"{{"reward_model":{{"ground_truth":{{"numbers":[1,2],"target":3}}}}}}"#
    )
    .expect("write");
    drop(f);
    let task = load_task("countdown").expect("task");
    let items: Vec<_> = read_instances(task.as_ref(), &path).collect();
    assert_eq!(items.len(), 7);
    assert_eq!(
        items[0].as_ref().map(|i| i.id.as_str()).ok(),
        Some("countdown-1")
    );
    assert!(matches!(items[1], Err(InstanceError::Json { line: 2, .. })));
    assert!(
        matches!(&items[2], Err(InstanceError::MissingField { line: 4, field }) if field == "target")
    );
    assert!(
        matches!(&items[3], Err(InstanceError::InvalidField { line: 5, field, .. }) if field == "nums")
    );
    assert!(matches!(
        &items[4],
        Err(InstanceError::InvalidField { line: 6, .. })
    ));
    let mine = items[5].as_ref().expect("integral floats accepted");
    assert_eq!(mine.id, "mine");
    assert_eq!(mine.fields["nums"], serde_json::json!([3, 5]));
    assert!(task.verify(mine, "<answer>3+5</answer>").pass);
    let tz = items[6].as_ref().expect("TinyZero ground truth");
    assert!(task.verify(tz, "<answer>1 + 2</answer>").pass);
    assert_eq!(
        items[1].as_ref().err().and_then(InstanceError::line),
        Some(2)
    );
}

#[test]
fn missing_file_is_one_error() {
    let task = load_task("countdown").expect("task");
    let items: Vec<_> =
        read_instances(task.as_ref(), std::path::Path::new("/nonexistent/x.jsonl")).collect();
    assert_eq!(items.len(), 1);
    assert!(matches!(items[0], Err(InstanceError::Open { .. })));
}

#[cfg(feature = "parquet")]
#[test]
fn tinyzero_parquet_rows() {
    use std::sync::Arc;

    use parquet::data_type::Int64Type;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("countdown.parquet");
    let schema = parse_message_type(
        "message schema { REQUIRED INT64 target; REQUIRED group nums (LIST) { REPEATED group list { REQUIRED INT64 element; } } }",
    )
    .expect("schema");
    let file = std::fs::File::create(&path).expect("create");
    let mut writer = SerializedFileWriter::new(
        file,
        Arc::new(schema),
        Arc::new(WriterProperties::builder().build()),
    )
    .expect("writer");
    let mut rg = writer.next_row_group().expect("row group");
    // Rows: target 8 with [3, 5]; target 24 with [8, 3, 8, 3].
    let mut col_no = 0;
    while let Some(mut col) = rg.next_column().expect("column") {
        let w = col.typed::<Int64Type>();
        if col_no == 0 {
            w.write_batch(&[8, 24], None, None).expect("targets");
        } else {
            w.write_batch(
                &[3, 5, 8, 3, 8, 3],
                Some(&[1, 1, 1, 1, 1, 1]),
                Some(&[0, 1, 0, 1, 1, 1]),
            )
            .expect("nums");
        }
        col.close().expect("close column");
        col_no += 1;
    }
    rg.close().expect("close row group");
    writer.close().expect("close file");

    let task = load_task("countdown").expect("task");
    let items: Vec<_> = read_instances(task.as_ref(), &path)
        .collect::<Result<_, _>>()
        .expect("rows parse");
    assert_eq!(items.len(), 2);
    assert_eq!(items[1].fields["nums"], serde_json::json!([8, 3, 8, 3]));
    assert!(task.verify(&items[0], "<answer>3 + 5</answer>").pass);
    assert!(
        task.verify(&items[1], "<answer>8 / (3 - 8 / 3)</answer>")
            .pass
    );
    assert_eq!(items[1].id, "countdown-2");

    let bad = dir.path().join("bad.parquet");
    std::fs::write(&bad, b"not parquet").expect("write");
    let items: Vec<_> = read_instances(task.as_ref(), &bad).collect();
    assert!(matches!(
        items.as_slice(),
        [Err(InstanceError::Parquet { .. })]
    ));
}

/// Blank lines shift neither the instances' order nor their default ids: the n-th record is the
/// n-th instance wherever blank lines fall (errors still name the file's line).
#[test]
fn blank_lines_do_not_shift_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let plain = write(
        "a.jsonl",
        "{\"nums\":[1,2],\"target\":3}\n{\"nums\":[2,2],\"target\":4}\n",
    );
    let spaced = write(
        "b.jsonl",
        "\n\n{\"nums\":[1,2],\"target\":3}\n   \n\n{\"nums\":[2,2],\"target\":4}\n\n{\"nums\":\"x\"}\n",
    );
    let task = load_task("countdown").expect("task");
    let ids = |p: &std::path::Path| -> Vec<String> {
        read_instances(task.as_ref(), p)
            .filter_map(Result::ok)
            .map(|i| i.id)
            .collect()
    };
    assert_eq!(ids(&plain), vec!["countdown-1", "countdown-2"]);
    assert_eq!(ids(&spaced), ids(&plain));
    let last = read_instances(task.as_ref(), &spaced)
        .nth(2)
        .expect("third record");
    assert_eq!(
        last.err().and_then(|e| e.line()),
        Some(8),
        "the file's line"
    );
}
