//! The agent's record of what it did to one namespace, one file per namespace under the state
//! directory: JSON with a `version` field (now [`VERSION`]).
//!
//! Version 1, a line format that older agents wrote, is still read, so that an agent updated
//! while a VPN is up keeps knowing what it owns; the executor rewrites such a record in the
//! current format as it loads it.
//!
//! A field added within a version has a default, so that records of earlier writers of the same
//! version still load; and since every reader ignores fields it does not know, an older agent
//! reads the newer record too (after a downgrade). Only a change that an older reader would
//! misread takes a new version.

use serde::{Deserialize, Serialize};

use crate::agent::sys::{FileId, NetnsId};
use crate::plan::settings::NetnsName;
use crate::plan::IsolationPlan;

/// The version of the record format that [`Record::encode`] writes.
pub const VERSION: u32 = 2;

/// A file under `/etc/netns/NAME` that the agent writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DnsFile {
    #[serde(rename = "resolv.conf")]
    ResolvConf,
    #[serde(rename = "nsswitch.conf")]
    NsswitchConf,
}

impl DnsFile {
    pub const ALL: [DnsFile; 2] = [DnsFile::ResolvConf, DnsFile::NsswitchConf];

    pub fn name(self) -> &'static str {
        match self {
            DnsFile::ResolvConf => "resolv.conf",
            DnsFile::NsswitchConf => "nsswitch.conf",
        }
    }

    pub(crate) fn content(self, plan: &IsolationPlan) -> &str {
        match self {
            DnsFile::ResolvConf => &plan.resolv_conf,
            DnsFile::NsswitchConf => &plan.nsswitch_conf,
        }
    }
}

/// A file the agent wrote, and what was there before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub file: DnsFile,
    /// The content the agent replaced; `None`: the agent created the file. Kept as hexadecimal
    /// digits, so that any content survives exactly.
    #[serde(rename = "backup_hex", with = "hex", default)]
    pub backup: Option<Vec<u8>>,
    /// What the agent last wrote there, saved before it writes: a file that no longer holds it
    /// was changed by someone else since, and is theirs. Records of 0.1.0 lack it.
    #[serde(rename = "written_hex", with = "hex", default)]
    pub written: Option<Vec<u8>>,
    /// The content a rewrite in place is putting there, saved before it starts and cleared once
    /// it is done. The rewrite truncates, then writes, so a crash leaves any prefix of it, the
    /// empty file included; such a file is still the agent's (see [`FileRecord::holds_ours`]).
    #[serde(rename = "rewriting_hex", with = "hex", default)]
    pub rewriting: Option<Vec<u8>>,
}

impl FileRecord {
    /// Whether `content`, what the file holds now, is what the agent left there: what it last
    /// wrote, part of a rewrite that was cut short, or, in a file it created, part of what it
    /// wrote: it does not sync a file it creates, so a power loss may leave it so.
    pub(crate) fn holds_ours(&self, content: Option<&[u8]>) -> bool {
        let Some(content) = content else {
            return false;
        };
        let prefix_of = |ours: Option<&[u8]>| ours.is_some_and(|ours| ours.starts_with(content));
        self.written.as_deref() == Some(content)
            || prefix_of(self.rewriting.as_deref())
            || (self.backup.is_none() && prefix_of(self.written.as_deref()))
    }
}

/// What the agent did to one namespace. Fields a record has that this agent does not know are
/// ignored, so that no more than what a record must say can keep it from being read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(with = "netns_name")]
    pub netns: NetnsName,
    pub connection_uuid: String,
    pub connection_id: String,
    /// The lease holder's unique bus name (`""` over a peer-to-peer connection).
    pub owner: String,
    /// `ipv4.never-default` and `ipv6.never-default` of the leasing connection: a `Reapply` needs
    /// them, also after the agent restarted. Records of 0.1.0 lack them, and read as false.
    #[serde(default)]
    pub never_default_v4: bool,
    #[serde(default)]
    pub never_default_v6: bool,
    /// The profile's `tunnel-mtu`, which a `Reapply` also needs. Older records lack it, and read
    /// as unset.
    #[serde(default)]
    pub tunnel_mtu: Option<u32>,
    /// The agent created the namespace, for `connection_uuid`.
    pub created: bool,
    /// The identity of the namespace the agent created or used. A namespace found under the
    /// name with another identity is not the one on record. Records of 0.1.0 lack it: the
    /// namespace found under the name is then taken as the one on record, as 0.1.0 did.
    #[serde(default)]
    pub netns_id: Option<NetnsId>,
    /// Written by an agent that records a namespace's identity before the namespace gets its
    /// name. In such a record, `created` without an identity means the creation was cut short
    /// before the name existed, so nothing under the name is the agent's. Records of 0.1.0 lack
    /// it (and version 1 ones): there the namespace found under the name is taken, as 0.1.0 did.
    #[serde(default)]
    pub identity_first: bool,
    /// A creation or a deletion of the namespace is under way, saved before it starts: only then
    /// is an empty file at `/run/netns/NAME` the agent's, left between linking the file there and
    /// mounting on it, or between unmounting and unlinking. Otherwise it may be the file of
    /// someone's `ip netns add` that has not mounted yet, and it stays.
    #[serde(default)]
    pub netns_pending: bool,
    /// The identity of the file the agent created at `/run/netns/NAME` to mount the namespace
    /// on, saved while the file has no name yet. With it, only that file is removed as the
    /// agent's leftover: after the agent's own unlink, the empty file of someone's `ip netns add`
    /// under the name is a new file. Records of older agents may lack it, also while
    /// `netns_pending` (they recorded it after the mount): they take any empty file of root's
    /// there then, as those agents did.
    #[serde(default)]
    pub netns_file: Option<FileId>,
    /// The user of a user connection (`connection.permissions`), whose namespaces count against
    /// the per-user limit; `None` for a system connection, and in records of 0.1.0.
    #[serde(default)]
    pub user: Option<String>,
    pub persistent: bool,
    /// An isolation is active in the namespace.
    pub leased: bool,
    /// The link's name inside the namespace while leased; and after, until the agent deleted it
    /// (see `link_ifindex`): a release that could not delete it keeps it on record, to try again.
    pub link: Option<String>,
    /// The link's index inside the namespace, as the kernel reported it after the move (a move
    /// keeps the index unless another link has it there). A release deletes the link by it, and
    /// only while the link with that index still has the name on record and is a tun. Records
    /// of older agents lack it: their link is left to go by itself, as openvpn's tun does.
    #[serde(default)]
    pub link_ifindex: Option<u32>,
    /// The agent created `/etc/netns/NAME`.
    pub etc_dir_created: bool,
    pub files: Vec<FileRecord>,
}

/// The format a record was read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// [`VERSION`]: nothing to do.
    Current,
    /// Version 1: to be rewritten in the current format.
    V1,
}

/// Why a record cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("it is neither JSON nor a version 1 record")]
    NotJson(#[source] serde_json::Error),
    #[error("it is a version {0} record; this agent reads versions 1 and {VERSION}")]
    Version(u64),
    #[error("it is not a valid version {VERSION} record")]
    Invalid(#[source] serde_path_to_error::Error<serde_json::Error>),
    #[error("it is not a valid version 1 record")]
    V1(#[source] v1::Invalid),
    #[error("it names namespace {0:?}, not its own")]
    OtherNetns(String),
}

/// A record as the file holds it: the record with the format's version.
#[derive(Serialize)]
struct Versioned<'a> {
    version: u64,
    #[serde(flatten)]
    record: &'a Record,
}

/// Only the version, to tell a newer format from a broken one.
#[derive(Deserialize)]
struct Version {
    version: u64,
}

impl Record {
    pub(crate) fn file(&self, file: DnsFile) -> Option<&FileRecord> {
        self.files.iter().find(|f| f.file == file)
    }

    pub(crate) fn file_mut(&mut self, file: DnsFile) -> Option<&mut FileRecord> {
        self.files.iter_mut().find(|f| f.file == file)
    }

    /// What is left of this record's meaning after a reboot, as the agent takes it up then
    /// (`Executor::recover`): the namespace, its identity, its lease and link are gone with `/run`;
    /// the connection, its options and what the agent did to `/etc/netns/NAME` remain. Two
    /// records with the same remains are the same to a rebooted agent, so the durable copy is
    /// rewritten, and synced, only when these change.
    pub fn after_reboot(&self) -> Record {
        Record {
            owner: String::new(),
            created: false,
            netns_id: None,
            netns_pending: false,
            // tmpfs numbers its inodes anew after a reboot.
            netns_file: None,
            leased: false,
            link: None,
            link_ifindex: None,
            ..self.clone()
        }
    }

    /// Whether the agent did, or is about to do, anything under `/etc/netns/NAME`, which outlives
    /// a reboot.
    pub fn touches_etc_netns(&self) -> bool {
        self.etc_dir_created || !self.files.is_empty()
    }

    /// The agent created a namespace that got this record's name: with its identity on record,
    /// or from before identities were saved first (0.1.0), when the name is all there is. A
    /// creation cut short before the name existed owns nothing under it.
    pub fn created_under_its_name(&self) -> bool {
        self.created && (self.netns_id.is_some() || !self.identity_first)
    }

    /// The record in the current format.
    pub fn encode(&self) -> Vec<u8> {
        let file = Versioned {
            version: VERSION.into(),
            record: self,
        };
        let mut out = serde_json::to_vec_pretty(&file).expect("a record always serialises");
        out.push(b'\n');
        out
    }

    /// Reads the record of `netns` in the current format or in version 1.
    pub fn decode(netns: &NetnsName, text: &[u8]) -> Result<(Record, Format), RecordError> {
        if text.starts_with(v1::HEADER.as_bytes()) {
            let record = v1::decode(netns, text).map_err(|e| RecordError::V1(v1::Invalid(e)))?;
            return Ok((record, Format::V1));
        }
        let Version { version } = serde_json::from_slice(text).map_err(RecordError::NotJson)?;
        if version != u64::from(VERSION) {
            return Err(RecordError::Version(version));
        }
        // The record's own fields; `version` is one it does not know, and ignores.
        let record: Record =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(text))
                .map_err(RecordError::Invalid)?;
        if record.netns != *netns {
            return Err(RecordError::OtherNetns(record.netns.to_string()));
        }
        Ok((record, Format::Current))
    }
}

/// A namespace name as a string, checked as it is read.
mod netns_name {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::plan::settings::NetnsName;

    pub fn serialize<S: Serializer>(name: &NetnsName, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NetnsName, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// Bytes as a string of hexadecimal digits, two a byte.
mod hex {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            None => s.serialize_none(),
            Some(bytes) => {
                let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                s.serialize_some(&text)
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        if text.len() % 2 != 0 {
            return Err(D::Error::custom("an odd number of hexadecimal digits"));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| D::Error::custom(format!("not hexadecimal at {i}")))
            })
            .collect::<Result<Vec<u8>, _>>()
            .map(Some)
    }
}

/// The reader of version 1, a line format: a header line, then `KEY VALUE` lines whose values
/// are escaped (`\\`, `\n`, `\t`, `\xHH`).
mod v1 {
    use std::collections::BTreeMap;

    use super::{DnsFile, FileRecord, Record};
    use crate::plan::settings::NetnsName;

    pub const HEADER: &str = "nm-vpn-netns record 1";

    /// What is wrong in a version 1 record: the line or field, and why.
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub struct Invalid(pub String);

    pub fn decode(netns: &NetnsName, text: &[u8]) -> Result<Record, String> {
        let text = std::str::from_utf8(text).map_err(|_| "it is not UTF-8".to_owned())?;
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(format!("the first line is not {HEADER:?}"));
        }
        let mut fields: BTreeMap<&str, String> = BTreeMap::new();
        let mut files = Vec::new();
        for line in lines {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "netns" | "uuid" | "id" | "owner" | "created" | "persistent" | "leased"
                | "etc-dir-created" | "link" => {
                    let value = String::from_utf8(unescape(value)?)
                        .map_err(|_| format!("{key} is not UTF-8"))?;
                    if fields.insert(key, value).is_some() {
                        return Err(format!("{key} appears twice"));
                    }
                }
                "file-created" => files.push(FileRecord {
                    file: dns_file(value)?,
                    backup: None,
                    written: None,
                    rewriting: None,
                }),
                "file-replaced" => {
                    let (name, backup) = value.split_once(' ').unwrap_or((value, ""));
                    files.push(FileRecord {
                        file: dns_file(name)?,
                        backup: Some(unescape(backup)?),
                        written: None,
                        rewriting: None,
                    });
                }
                _ => return Err(format!("unknown line {line:?}")),
            }
        }
        record(netns, fields, files)
    }

    fn record(
        netns: &NetnsName,
        mut fields: BTreeMap<&str, String>,
        files: Vec<FileRecord>,
    ) -> Result<Record, String> {
        let mut take = |key: &str| {
            fields
                .remove(key)
                .ok_or_else(|| format!("{key} is missing"))
        };
        let flag = |key: &str, v: String| match v.as_str() {
            "yes" => Ok(true),
            "no" => Ok(false),
            _ => Err(format!("{key} is {v:?}, not yes or no")),
        };
        if take("netns")? != netns.as_str() {
            return Err("it names another namespace".to_owned());
        }
        Ok(Record {
            netns: netns.clone(),
            connection_uuid: take("uuid")?,
            connection_id: take("id")?,
            owner: take("owner")?,
            never_default_v4: false,
            never_default_v6: false,
            tunnel_mtu: None,
            created: flag("created", take("created")?)?,
            netns_id: None,
            identity_first: false,
            netns_pending: false,
            netns_file: None,
            user: None,
            persistent: flag("persistent", take("persistent")?)?,
            leased: flag("leased", take("leased")?)?,
            etc_dir_created: flag("etc-dir-created", take("etc-dir-created")?)?,
            link: take("link").ok(),
            link_ifindex: None,
            files,
        })
    }

    fn dns_file(name: &str) -> Result<DnsFile, String> {
        DnsFile::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| format!("unknown file {name:?}"))
    }

    fn unescape(text: &str) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(text.len());
        let mut bytes = text.bytes();
        while let Some(b) = bytes.next() {
            if b != b'\\' {
                out.push(b);
                continue;
            }
            match bytes.next() {
                Some(b'\\') => out.push(b'\\'),
                Some(b'n') => out.push(b'\n'),
                Some(b't') => out.push(b'\t'),
                Some(b'x') => {
                    let hex = [bytes.next(), bytes.next()];
                    let byte = match hex {
                        [Some(h), Some(l)] => std::str::from_utf8(&[h, l])
                            .ok()
                            .and_then(|s| u8::from_str_radix(s, 16).ok()),
                        _ => None,
                    };
                    out.push(byte.ok_or_else(|| format!("bad \\x escape in {text:?}"))?);
                }
                _ => return Err(format!("bad escape in {text:?}")),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b";
    /// A record written by the version 1 encoder, with a connection id and a backup that needed
    /// escaping.
    const V1_FIXTURE: &[u8] = include_bytes!("testdata/record-v1-work");
    /// The same record as the agent of release 0.1.0 wrote it: version 2, without the
    /// `never_default_*` fields.
    const V2_0_1_0_FIXTURE: &[u8] = include_bytes!("testdata/record-v2-0.1.0-work");

    /// A power loss can empty or cut short only a file the agent created, which it does not sync;
    /// a file it replaced was synced, so part of it there is someone's.
    #[test]
    fn a_prefix_of_what_the_agent_wrote_is_its_own_only_in_a_file_it_created() {
        let created = FileRecord {
            file: DnsFile::ResolvConf,
            backup: None,
            written: Some(b"nameserver 198.19.0.1\n".to_vec()),
            rewriting: None,
        };
        let replaced = FileRecord {
            backup: Some(b"nameserver 192.0.2.1\n".to_vec()),
            ..created.clone()
        };
        for content in [&b""[..], b"nameserver 198", b"nameserver 198.19.0.1\n"] {
            assert!(created.holds_ours(Some(content)), "{content:?}");
        }
        assert!(replaced.holds_ours(Some(b"nameserver 198.19.0.1\n")));
        for content in [&b""[..], b"nameserver 198"] {
            assert!(!replaced.holds_ours(Some(content)), "{content:?}");
        }
        assert!(!created.holds_ours(Some(b"nameserver 198.19.0.1\nsearch x\n")));
        assert!(!created.holds_ours(None));
    }

    fn work() -> NetnsName {
        "work".parse().unwrap()
    }

    fn sample() -> Record {
        Record {
            netns: work(),
            connection_uuid: UUID.to_owned(),
            connection_id: "a b\\c\nd\t\u{1b}é".to_owned(),
            owner: ":1.7".to_owned(),
            never_default_v4: false,
            never_default_v6: false,
            tunnel_mtu: None,
            created: false,
            netns_id: None,
            identity_first: false,
            netns_pending: false,
            netns_file: None,
            user: None,
            persistent: true,
            leased: true,
            link: Some("vpn0".to_owned()),
            link_ifindex: None,
            etc_dir_created: false,
            files: vec![
                FileRecord {
                    file: DnsFile::NsswitchConf,
                    backup: None,
                    written: None,
                    rewriting: None,
                },
                FileRecord {
                    file: DnsFile::ResolvConf,
                    backup: Some(b"nameserver 192.0.2.1\n\xff\x00 x".to_vec()),
                    written: None,
                    rewriting: None,
                },
            ],
        }
    }

    fn decode(netns: &NetnsName, text: &[u8]) -> Result<(Record, Format), String> {
        Record::decode(netns, text).map_err(|e| crate::report::chain(&e))
    }

    #[test]
    fn record_round_trip() {
        let r = sample();
        let text = r.encode();
        assert_eq!(decode(&work(), &text), Ok((r.clone(), Format::Current)));
        let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(json["version"], 2);
        assert_eq!(json["files"][1]["file"], "resolv.conf");
        assert_eq!(
            json["files"][1]["backup_hex"],
            "6e616d65736572766572203139322e302e322e310aff002078"
        );
        let empty = Record {
            link: None,
            files: vec![FileRecord {
                file: DnsFile::ResolvConf,
                backup: Some(Vec::new()),
                written: None,
                rewriting: None,
            }],
            ..r
        };
        assert_eq!(
            decode(&work(), &empty.encode()),
            Ok((empty.clone(), Format::Current))
        );
        let other: NetnsName = "other".parse().unwrap();
        assert_eq!(
            decode(&other, &empty.encode()).unwrap_err(),
            "it names namespace \"work\", not its own"
        );
    }

    #[test]
    fn a_record_of_0_1_0_loads_with_never_default_off() {
        assert_eq!(
            decode(&work(), V2_0_1_0_FIXTURE),
            Ok((sample(), Format::Current))
        );
        // The fixture is today's encoding but for the fields added since.
        let mut today: serde_json::Value = serde_json::from_slice(&sample().encode()).unwrap();
        let fields = today.as_object_mut().unwrap();
        for added in [
            "never_default_v4",
            "never_default_v6",
            "tunnel_mtu",
            "netns_id",
            "identity_first",
            "netns_pending",
            "netns_file",
            "user",
            "link_ifindex",
        ] {
            fields.remove(added).unwrap();
        }
        for file in fields["files"].as_array_mut().unwrap() {
            let file = file.as_object_mut().unwrap();
            for added in ["written_hex", "rewriting_hex"] {
                file.remove(added).unwrap();
            }
        }
        let fixture: serde_json::Value = serde_json::from_slice(V2_0_1_0_FIXTURE).unwrap();
        assert_eq!(today, fixture);
        let mut r = Record {
            never_default_v4: true,
            never_default_v6: true,
            tunnel_mtu: Some(1400),
            netns_id: Some(NetnsId {
                dev: 4,
                ino: 4026532291,
            }),
            netns_file: Some(FileId { dev: 25, ino: 7 }),
            user: Some("alice".to_owned()),
            link_ifindex: Some(12),
            ..sample()
        };
        r.files[0].written = Some(b"hosts: files dns\n".to_vec());
        assert_eq!(decode(&work(), &r.encode()), Ok((r, Format::Current)));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let r = sample();
        let text = String::from_utf8(r.encode()).unwrap();
        let more = text.replacen("{", "{\"later\": [1, 2],", 1);
        assert_eq!(decode(&work(), more.as_bytes()), Ok((r, Format::Current)));
    }

    #[test]
    fn every_byte_survives() {
        let mut r = sample();
        r.files[1].backup = Some((0..=255).collect());
        let (back, _) = Record::decode(&work(), &r.encode()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn broken_records_are_refused() {
        let v2 = String::from_utf8(sample().encode()).unwrap();
        for (bad, why) in [
            ("", "it is neither JSON nor a version 1 record"),
            (
                "nm-vpn-netns record 2\n",
                "it is neither JSON nor a version 1 record",
            ),
            (
                "{\"version\": 3}",
                "it is a version 3 record; this agent reads versions 1 and 2",
            ),
            (
                "{\"version\": 2}",
                "it is not a valid version 2 record: missing field `netns`",
            ),
            (
                &v2.replace("\"owner\"", "\"bogus\""),
                "it is not a valid version 2 record: missing field `owner`",
            ),
            (
                &v2.replace("\"resolv.conf\"", "\"hosts\""),
                "it is not a valid version 2 record: files[1].file: unknown variant `hosts`",
            ),
            (
                &v2.replace("0aff00", "0aff0"),
                "it is not a valid version 2 record: files[1].backup_hex: an odd number",
            ),
            (
                &v2.replace("0aff00", "0azz00"),
                "it is not a valid version 2 record: files[1].backup_hex: not hexadecimal at",
            ),
        ] {
            let err = decode(&work(), bad.as_bytes()).unwrap_err();
            assert!(err.starts_with(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn broken_version_1_records_are_refused() {
        for bad in [
            &b"nm-vpn-netns record 1\n\xff\n"[..],
            b"nm-vpn-netns record 1\nnetns work\n",
            b"nm-vpn-netns record 1\nbogus 1\n",
            b"nm-vpn-netns record 1\nfile-created hosts\n",
            b"nm-vpn-netns record 1\nid \\q\n",
            b"nm-vpn-netns record 1\nid \\x4\n",
            b"nm-vpn-netns record 1\nid a\nid b\n",
        ] {
            assert!(
                matches!(Record::decode(&work(), bad), Err(RecordError::V1(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let other: NetnsName = "other".parse().unwrap();
        assert_eq!(
            decode(&other, V1_FIXTURE).unwrap_err(),
            "it is not a valid version 1 record: it names another namespace"
        );
    }

    #[test]
    fn a_version_1_record_is_read_field_by_field() {
        let (r, format) = Record::decode(&work(), V1_FIXTURE).unwrap();
        assert_eq!(format, Format::V1);
        assert_eq!(r.netns, work());
        assert_eq!(r.connection_uuid, UUID);
        assert_eq!(r.connection_id, "a b\\c\nd\t\u{1b}é");
        assert_eq!(r.owner, ":1.7");
        assert!(!r.created && r.persistent && r.leased && !r.etc_dir_created);
        assert_eq!(r.link.as_deref(), Some("vpn0"));
        let files: Vec<_> = r
            .files
            .iter()
            .map(|f| (f.file, f.backup.as_deref()))
            .collect();
        assert_eq!(
            files,
            [
                (DnsFile::NsswitchConf, None),
                (
                    DnsFile::ResolvConf,
                    Some(&b"nameserver 192.0.2.1\n\xff\x00 x"[..])
                ),
            ]
        );
        assert_eq!(r, sample());

        // Rewritten, it is a current record with the same content.
        let rewritten = r.encode();
        assert!(rewritten.starts_with(b"{"), "{rewritten:?}");
        assert_eq!(
            Record::decode(&work(), &rewritten).unwrap(),
            (r, Format::Current)
        );
    }
}
