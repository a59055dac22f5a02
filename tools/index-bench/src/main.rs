//! The payments' index rows, written as `api/platform/src/payments/store.rs` writes
//! them (per payment: its place in `all`, the sender's and the receiver's lists, its
//! idempotency key, its `open` row, taken out a batch later, and the sender's risk
//! row), into redb (non-durable commits, a durable one every second, as the platform
//! does) or into fjall (batches, a sync of its journal every second), for comparing
//! the engines' cost per payment as the index grows.
//!
//!     cargo run --release --manifest-path tools/index-bench/Cargo.toml -- ENGINE PAYMENTS BATCH DIR
//!
//! ENGINE is `redb` or `fjall`; BATCH payments' rows a transaction; DIR is emptied
//! first. Prints payments/s overall and by tenth of the run, and the bytes on disk.
//! Time it with `/usr/bin/time` for the CPU of the engines' own threads too.

use std::time::Instant;

use redb::{Database, Durability, TableDefinition};

const ALL: TableDefinition<(u64, u128), ()> = TableDefinition::new("all");
const BY_USER: TableDefinition<(u128, u64, u128), ()> = TableDefinition::new("by_user");
const KEYS: TableDefinition<(u128, &str), u128> = TableDefinition::new("keys");
const OPEN: TableDefinition<(u64, u128), ()> = TableDefinition::new("open");
const SENT: TableDefinition<(u128, u64, u128), &[u8]> = TableDefinition::new("sent");

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn u128(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
}

struct Payment {
    id: u128,
    at: u64,
    sender: u128,
    receiver: u128,
    key: String,
}

fn payments(n: usize, users: &[u128], rng: &mut Rng) -> Vec<Payment> {
    (0..n)
        .map(|i| Payment {
            id: rng.u128(),
            at: 1_700_000_000_000_000_000 + i as u64 * 150_000,
            sender: users[(rng.next() % users.len() as u64) as usize],
            receiver: users[(rng.next() % users.len() as u64) as usize],
            key: format!("load-{:032x}", rng.u128()),
        })
        .collect()
}

fn report(name: &str, times: &[f64], batch: usize) {
    let tenth = times.len() / 10;
    let rates: Vec<String> =
        times.chunks(tenth).map(|c| format!("{:.0}", (c.len() * batch) as f64 / c.iter().sum::<f64>())).collect();
    let total: f64 = times.iter().sum();
    println!("{name}: {:.0} payments/s overall; by tenth: {}", (times.len() * batch) as f64 / total, rates.join(" "));
}

fn run_redb(dir: &std::path::Path, all: &[Payment], batch: usize) {
    let db = Database::builder().set_cache_size(64 << 20).create(dir.join("index.redb")).unwrap();
    let mut times = Vec::new();
    let mut last_durable = Instant::now();
    for (n, chunk) in all.chunks(batch).enumerate() {
        let started = Instant::now();
        let mut txn = db.begin_write().unwrap();
        let durable = last_durable.elapsed().as_secs_f64() >= 1.0;
        if durable {
            last_durable = Instant::now();
        }
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None }).unwrap();
        {
            let mut a = txn.open_table(ALL).unwrap();
            let mut u = txn.open_table(BY_USER).unwrap();
            let mut k = txn.open_table(KEYS).unwrap();
            let mut o = txn.open_table(OPEN).unwrap();
            let mut s = txn.open_table(SENT).unwrap();
            for p in chunk {
                let inv = (u64::MAX - p.at, u128::MAX - p.id);
                a.insert(inv, ()).unwrap();
                u.insert((p.sender, inv.0, inv.1), ()).unwrap();
                u.insert((p.receiver, inv.0, inv.1), ()).unwrap();
                k.insert((p.sender, p.key.as_str()), p.id).unwrap();
                o.insert((p.at, p.id), ()).unwrap();
                s.insert((p.sender, p.at, p.id), [0u8; 11].as_slice()).unwrap();
            }
            // The payments of the batch before end: their open rows leave.
            if n > 0 {
                for p in &all[(n - 1) * batch..n * batch] {
                    o.remove((p.at, p.id)).unwrap();
                }
            }
        }
        txn.commit().unwrap();
        times.push(started.elapsed().as_secs_f64());
    }
    report(&format!("redb batch {batch}"), &times, batch);
}

fn run_fjall(dir: &std::path::Path, all: &[Payment], batch: usize) {
    let db = fjall::Database::builder(dir.join("fjall")).cache_size(64 << 20).open().unwrap();
    let opts = fjall::KeyspaceCreateOptions::default;
    let a = db.keyspace("all", opts).unwrap();
    let u = db.keyspace("by_user", opts).unwrap();
    let k = db.keyspace("keys", opts).unwrap();
    let o = db.keyspace("open", opts).unwrap();
    let s = db.keyspace("sent", opts).unwrap();
    let mut times = Vec::new();
    let mut last_durable = Instant::now();
    let cat = |parts: &[&[u8]]| parts.concat();
    for (n, chunk) in all.chunks(batch).enumerate() {
        let started = Instant::now();
        let mut b = db.batch();
        for p in chunk {
            let (t, i) = ((u64::MAX - p.at).to_be_bytes(), (u128::MAX - p.id).to_be_bytes());
            b.insert(&a, cat(&[&t, &i]), []);
            b.insert(&u, cat(&[&p.sender.to_be_bytes(), &t, &i]), []);
            b.insert(&u, cat(&[&p.receiver.to_be_bytes(), &t, &i]), []);
            b.insert(&k, cat(&[&p.sender.to_be_bytes(), p.key.as_bytes()]), p.id.to_be_bytes());
            b.insert(&o, cat(&[&p.at.to_be_bytes(), &p.id.to_be_bytes()]), []);
            b.insert(&s, cat(&[&p.sender.to_be_bytes(), &p.at.to_be_bytes(), &p.id.to_be_bytes()]), [0u8; 11]);
        }
        if n > 0 {
            for p in &all[(n - 1) * batch..n * batch] {
                b.remove(&o, cat(&[&p.at.to_be_bytes(), &p.id.to_be_bytes()]));
            }
        }
        b.commit().unwrap();
        if last_durable.elapsed().as_secs_f64() >= 1.0 {
            last_durable = Instant::now();
            db.persist(fjall::PersistMode::SyncAll).unwrap();
        }
        times.push(started.elapsed().as_secs_f64());
    }
    report(&format!("fjall batch {batch}"), &times, batch);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: index-bench redb|fjall PAYMENTS BATCH DIR";
    let (Some(engine), Some(count), Some(batch), Some(dir)) = (
        args.get(1).filter(|e| ["redb", "fjall"].contains(&e.as_str())),
        args.get(2).and_then(|n| n.parse::<usize>().ok()).filter(|n| *n >= 10),
        args.get(3).and_then(|n| n.parse::<usize>().ok()).filter(|n| *n >= 1),
        args.get(4).map(std::path::PathBuf::from),
    ) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let engine = engine.as_str();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let users: Vec<u128> = (0..100_000).map(|_| rng.u128()).collect();
    let all = payments(count, &users, &mut rng);
    match engine {
        "redb" => run_redb(&dir, &all, batch),
        _ => run_fjall(&dir, &all, batch),
    }
    let size: u64 = walk(&dir);
    println!("disk bytes {size} ({:.0} per payment)", size as f64 / count as f64);
}

fn walk(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                walk(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}
