//! RIG's partition rule for keyed messages: partition `murmur3_x86_32(key) mod n` (seed 0), so a
//! key lands on the partition RIG put it on (librdkafka's default hashes with CRC32, Java clients
//! with murmur2: neither agrees with RIG). Keyless messages are left to the producer (RIG: a
//! random partition).
//!
//! Partition counts come from the producer's metadata, cached per topic for [`TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, Producer};

/// How long a topic's partition count is trusted (partitions added meanwhile are used after it).
pub const TTL: Duration = Duration::from_secs(30);

/// MurmurHash3, x86 32-bit variant (Austin Appleby's public-domain algorithm), seed `seed`.
pub fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, byte) in tail.iter().enumerate() {
            k ^= u32::from(*byte) << (8 * i);
        }
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    // The length modulo 2^32, as the reference implementation does.
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// The partition RIG puts `key` on in a topic of `partitions` partitions.
pub fn rig_partition(key: &[u8], partitions: i32) -> i32 {
    let n = u32::try_from(partitions.max(1)).unwrap_or(1);
    i32::try_from(murmur3_x86_32(key, 0) % n).unwrap_or(0)
}

/// Partition counts per topic, from a producer's metadata.
#[derive(Debug, Default)]
pub struct PartitionCounts {
    known: Mutex<HashMap<String, (i32, Instant)>>,
}

impl PartitionCounts {
    /// The partition count of `topic`: cached, else asked of the brokers (off the async workers,
    /// bounded by `timeout`); `None` when they do not answer and nothing is cached.
    pub async fn get(
        &self,
        producer: &FutureProducer,
        topic: &str,
        timeout: Duration,
    ) -> Option<i32> {
        let cached = self.lock().get(topic).copied();
        if let Some((count, at)) = cached
            && at.elapsed() < TTL
        {
            return Some(count);
        }
        let client = producer.clone();
        let name = topic.to_owned();
        let fetched = tokio::task::spawn_blocking(move || {
            let metadata = client.client().fetch_metadata(Some(&name), timeout).ok()?;
            let t = metadata.topics().iter().find(|t| t.name() == name)?;
            (t.error().is_none() && !t.partitions().is_empty())
                .then(|| i32::try_from(t.partitions().len()).unwrap_or(i32::MAX))
        })
        .await
        .ok()
        .flatten();
        match fetched {
            Some(count) => {
                self.lock()
                    .insert(topic.to_owned(), (count, Instant::now()));
                Some(count)
            }
            // The brokers did not answer: the last known count (partitions rarely change).
            None => cached.map(|(count, _)| count),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i32, Instant)>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_matches_the_reference_vectors() {
        assert_eq!(murmur3_x86_32(b"", 0), 0);
        assert_eq!(murmur3_x86_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_x86_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_x86_32(b"Hello, world!", 1234), 0xfaf6_cdb3);
        assert_eq!(
            murmur3_x86_32(b"The quick brown fox jumps over the lazy dog", 0),
            0x2e4f_f723
        );
    }

    #[test]
    fn partitions_follow_the_hash() {
        assert_eq!(rig_partition(b"hello", 3), (0x248b_fa47u32 % 3) as i32);
        for key in [&b"a"[..], b"customer-7", b"k0"] {
            let p = rig_partition(key, 12);
            assert!((0..12).contains(&p));
            assert_eq!(p, rig_partition(key, 12), "stable");
        }
        assert_eq!(rig_partition(b"x", 0), 0, "a bad count never panics");
    }
}
