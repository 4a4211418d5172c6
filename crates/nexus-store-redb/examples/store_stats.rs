//! Where a neXus data directory's bytes go: key and value bytes per key family of each
//! table (as stored: in layout 2 a key-value entry's value is usually a 9-byte
//! reference into `nexus2_heap`, whose entries are counted apart), and redb's own
//! accounting (stored, metadata, fragmented bytes).
//!
//! ```sh
//! cargo run -p nexus-store-redb --release --example store_stats -- DATA/nexus.redb
//! ```

use std::collections::BTreeMap;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

fn family(key: &str) -> String {
    let mut parts = key.split('/');
    let first = parts.next().unwrap_or("");
    match first {
        "x" => format!("x/{}/", parts.next().unwrap_or("")),
        _ if key.contains('/') => format!("{first}/"),
        _ => key.to_owned(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: store_stats FILE")?;
    if std::env::args().any(|a| a == "--compact") {
        let t0 = std::time::Instant::now();
        let mut db = Database::open(&path)?;
        db.compact()?;
        println!("compacted in {:.1} s", t0.elapsed().as_secs_f64());
    }
    let file = std::fs::metadata(&path)?.len();
    let db = Database::open(&path)?;
    let read = db.begin_read()?;
    let mut total = (0u64, 0u64, 0u64);
    for table in read.list_tables()? {
        if table.name() == "nexus2_heap" {
            let def: TableDefinition<u64, &[u8]> = TableDefinition::new(table.name());
            let (mut n, mut vb) = (0u64, 0u64);
            for entry in read.open_table(def)?.iter()? {
                n += 1;
                vb += entry?.1.value().len() as u64;
            }
            println!(
                "table nexus2_heap: {n} entries  keys {} B  values {vb} B",
                n * 8
            );
            total.0 += n;
            total.1 += n * 8;
            total.2 += vb;
            continue;
        }
        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(table.name());
        let t = read.open_table(def)?;
        let mut by: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            let e = by.entry(family(k.value())).or_default();
            e.0 += 1;
            e.1 += k.value().len() as u64;
            e.2 += v.value().len() as u64;
        }
        println!("table {}:", table.name());
        for (f, (n, kb, vb)) in &by {
            println!(
                "  {f:<12} {n:>9} entries  keys {kb:>11} B  values {vb:>11} B  ({} B/entry)",
                (kb + vb) / n.max(&1)
            );
            total.0 += n;
            total.1 += kb;
            total.2 += vb;
        }
    }
    drop(read);
    let write = db.begin_write()?;
    let stats = write.stats()?;
    println!(
        "all: {} entries, keys {} B, values {} B; file {file} B",
        total.0, total.1, total.2
    );
    println!(
        "redb: stored {} B, metadata {} B, fragmented {} B, leaf pages {}, branch pages {}, tree height {}",
        stats.stored_bytes(),
        stats.metadata_bytes(),
        stats.fragmented_bytes(),
        stats.leaf_pages(),
        stats.branch_pages(),
        stats.tree_height()
    );
    write.abort()?;
    Ok(())
}
