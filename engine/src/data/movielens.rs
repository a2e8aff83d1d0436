//! MovieLens ratings: `u.data` (tab-separated), `ratings.dat` (`::`) or `ratings.csv`
//! (with a header): user, item, rating, unix seconds. Every rating is one interaction of
//! weight 1.

use std::path::Path;

use recsys_schemas::Event;

use super::{at, lines};
use crate::Result;

pub(super) fn read(path: &Path) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    for (n, line) in lines(path)? {
        let line = line.map_err(|e| at(path, n, e))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = if line.contains("::") {
            line.split("::").collect()
        } else if line.contains('\t') {
            line.split('\t').collect()
        } else {
            if n == 1 && line.to_ascii_lowercase().starts_with("userid") {
                continue; // the ratings.csv header
            }
            line.split(',').collect()
        };
        if fields.len() < 4 {
            return Err(at(
                path,
                n,
                format!(
                    "expected user, item, rating, timestamp; got {} fields",
                    fields.len()
                ),
            ));
        }
        let secs: i64 = fields[3].trim().parse().map_err(|_| {
            at(
                path,
                n,
                format!("timestamp {:?} is not an integer", fields[3]),
            )
        })?;
        let rating: f32 = fields[2]
            .trim()
            .parse()
            .map_err(|_| at(path, n, format!("rating {:?} is not a number", fields[2])))?;
        if !rating.is_finite() {
            return Err(at(path, n, "rating is not finite"));
        }
        let (user, item) = (fields[0].trim(), fields[1].trim());
        if user.is_empty() || item.is_empty() {
            return Err(at(path, n, "empty user or item id"));
        }
        out.push(Event {
            user_id: user.to_owned(),
            item_id: item.to_owned(),
            kind: "rating".into(),
            weight: 1.0,
            ts: secs.saturating_mul(1000),
            event_id: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{Format, read, write_test_file as write};

    #[test]
    fn the_three_movielens_formats_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let u_data = write(
            dir.path(),
            "u.data",
            "196\t242\t3\t881250949\n186\t302\t3\t891717742\n",
        );
        let dat = write(
            dir.path(),
            "ratings.dat",
            "196::242::3::881250949\n186::302::3::891717742\n",
        );
        let csv = write(
            dir.path(),
            "ratings.csv",
            "userId,movieId,rating,timestamp\n196,242,3.0,881250949\n186,302,3.0,891717742\n",
        );
        let a = read(Format::Movielens, &u_data).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].user_id, "196");
        assert_eq!(a[0].item_id, "242");
        assert_eq!(a[0].ts, 881_250_949_000);
        assert_eq!(read(Format::Movielens, &dat).unwrap(), a);
        assert_eq!(read(Format::Movielens, &csv).unwrap(), a);
    }

    #[test]
    fn bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "u.data", "1\t2\t3\t4\n1\t2\t3\tsoon\n");
        let err = read(Format::Movielens, &p).unwrap_err().to_string();
        assert!(
            err.contains("u.data:2") && err.contains("timestamp"),
            "{err}"
        );
        let p = write(
            dir.path(),
            "e.jsonl",
            "{\"user_id\":\"u\",\"item_id\":\"i\"}\n{\"user_id\":\"\"}\n",
        );
        let err = read(Format::Jsonl, &p).unwrap_err().to_string();
        assert!(
            err.contains("e.jsonl:2") && err.contains("user_id"),
            "{err}"
        );
    }
}
