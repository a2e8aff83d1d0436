//! Plain text: one interaction a line, `user item seconds`, separated by white space
//! (the form of the JODIE logs, such as the Wikipedia edits); a fourth column, if any,
//! is the weight.

use std::path::Path;

use recsys_schemas::Event;

use super::{at, lines};
use crate::Result;

pub(super) fn read(path: &Path) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    for (n, line) in lines(path)? {
        let line = line.map_err(|e| at(path, n, e))?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() < 3 {
            return Err(at(
                path,
                n,
                format!("expected user, item, seconds; got {} fields", fields.len()),
            ));
        }
        let secs: f64 = fields[2]
            .parse()
            .map_err(|_| at(path, n, format!("time {:?} is not a number", fields[2])))?;
        let weight: f32 = match fields.get(3) {
            Some(w) => w
                .parse()
                .map_err(|_| at(path, n, format!("weight {w:?} is not a number")))?,
            None => 1.0,
        };
        if !secs.is_finite() || secs < 0.0 || !weight.is_finite() {
            return Err(at(
                path,
                n,
                "time and weight must be finite, time not negative",
            ));
        }
        out.push(Event {
            user_id: fields[0].to_owned(),
            item_id: fields[1].to_owned(),
            kind: "interaction".into(),
            weight,
            ts: (secs * 1000.0).round() as i64,
            event_id: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{Format, read, write_test_file};

    #[test]
    fn reads_user_item_seconds_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_test_file(dir.path(), "edits.txt", "1 8228 0.0\n2 8229 36.5 2\n\n");
        let e = read(Format::Text, &p).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[1].user_id.as_str(), e[1].item_id.as_str()),
            ("2", "8229")
        );
        assert_eq!((e[1].ts, e[1].weight), (36_500, 2.0));
        let p = write_test_file(dir.path(), "bad.txt", "1 8228 0\n1 8228 soon\n");
        let err = read(Format::Text, &p).unwrap_err().to_string();
        assert!(err.contains("bad.txt:2") && err.contains("time"), "{err}");
    }
}
