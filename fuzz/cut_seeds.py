#!/usr/bin/env python3
"""Cut the committed fuzz seeds (fuzz/seeds/<target>/) from real data.

    python3 fuzz/cut_seeds.py [--corpus ~/.cache/netdma/corpus] [--captures ../shared/captures]

Sources: the NetTLP captures in ../shared/captures, and one corpus entry's running dumps
(deb-amd64: dump.elf, dump.raw). Every seed is small (a few KB to a few hundred KB):
- nettlp, tlp, capture: UDP payloads / TLPs / small pcap files from the captures;
- elf, lime, avml: the dump's own ELF notes (VMCOREINFO) and a few of its real pages, re-wrapped;
- kdump: makedumpfile (zlib, lzo, snappy; standard and flattened) run on that small ELF core;
- vmcoreinfo: the dump's VMCOREINFO note; ikconfig: the kernel's config as IKCONFIG embeds it;
- btf: the kernel's .BTF cut down to the structs the walker reads (pointers to void);
- isf: `harness profile` of the dump, cut down to the same structs;
- paging, walk, ps, kallsyms: see cut_memory_seeds (the pages `harness ps` reads, recorded).
Run from the repository root. Rerunning replaces the seeds it writes.
"""
import argparse
import gzip
import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"


def put(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


# ---------------------------------------------------------------- pcaps
def pcap_frames(path):
    b = path.read_bytes()
    magic = struct.unpack_from("<I", b, 0)[0]
    end = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack_from(end + "I", b, 20)[0]
    off = 24
    while off + 16 <= len(b):
        _, _, incl, _ = struct.unpack_from(end + "IIII", b, off)
        yield linktype, b[off + 16 : off + 16 + incl]
        off += 16 + incl


def udp_payload(linktype, frame):
    if linktype == 1:  # Ethernet
        if len(frame) < 14 or frame[12:14] != b"\x08\x00":
            return None
        ip = frame[14:]
    elif linktype in (101, 228):  # raw IPv4
        ip = frame
    else:
        return None
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
        return None
    ihl = (ip[0] & 15) * 4
    udp = ip[ihl:]
    if len(udp) < 8:
        return None
    return struct.unpack_from(">H", udp, 2)[0], udp[8:]


def cut_captures(captures):
    pcaps = sorted(captures.rglob("*.pcap"))
    seen = set()
    n = 0
    for p in pcaps:
        for lt, frame in pcap_frames(p):
            r = udp_payload(lt, frame)
            if not r:
                continue
            port, payload = r
            # One of each (port class, TLP fmt/type, length) is plenty.
            key = (port >> 12, payload[6:7], min(len(payload), 64), payload[8:9])
            if key in seen or len(payload) < 6:
                continue
            seen.add(key)
            sel = {0x2: 0, 0x3: 1, 0x4: 2}.get(port >> 12, 0)
            put("nettlp", f"{p.stem}-{n}", bytes([sel]) + payload)
            put("tlp", f"{p.stem}-{n}", payload[6:])
            n += 1
    small = [p for p in pcaps if p.stat().st_size <= 64 << 10]
    for p in sorted(small, key=lambda p: p.stat().st_size)[:12]:
        put("capture", p.name, p.read_bytes())
    print(f"captures: {n} datagrams, {min(len(small), 12)} pcaps", file=sys.stderr)


# ---------------------------------------------------------------- ELF and friends
def elf_parts(path):
    """(notes bytes, [(paddr, filesz, offset)]) of an ELF core."""
    with open(path, "rb") as f:
        eh = f.read(64)
        phoff, = struct.unpack_from("<Q", eh, 32)
        phentsize, phnum = struct.unpack_from("<HH", eh, 54)
        f.seek(phoff)
        ph = f.read(phentsize * phnum)
        notes = b""
        loads = []
        for i in range(phnum):
            p_type, _, p_off, _, p_paddr, p_filesz, _, _ = struct.unpack_from("<IIQQQQQQ", ph, i * phentsize)
            if p_type == 4:
                f.seek(p_off)
                notes += f.read(p_filesz)
            elif p_type == 1:
                loads.append((p_paddr, p_filesz, p_off))
        return notes, loads


def read_phys(path, loads, paddr, n):
    for base, size, off in loads:
        if base <= paddr and paddr + n <= base + size:
            with open(path, "rb") as f:
                f.seek(off + paddr - base)
                return f.read(n)
    return None


def notes_iter(notes):
    off = 0
    while off + 12 <= len(notes):
        nsz, dsz, typ = struct.unpack_from("<III", notes, off)
        name = notes[off + 12 : off + 12 + nsz]
        d0 = off + 12 + ((nsz + 3) & ~3)
        yield name.rstrip(b"\0"), typ, notes[d0 : d0 + dsz]
        off = d0 + ((dsz + 3) & ~3)


def make_elf(notes, pages):
    """An ELF core: one PT_NOTE with `notes`, one PT_LOAD per (paddr, bytes)."""
    phnum = 1 + len(pages)
    data_off = 64 + 56 * phnum
    eh = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    eh += struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 4, 0, data_off, 0, 0, len(notes), len(notes), 0)
    body = notes
    off = data_off + len(notes)
    off_al = (off + 4095) & ~4095
    body += bytes(off_al - off)
    off = off_al
    for paddr, b in pages:
        ph += struct.pack("<IIQQQQQQ", 1, 7, off, 0, paddr, len(b), len(b), 0)
        body += b
        off += len(b)
    return eh + ph + body


def lime(pages, magic=0x4C694D45, version=1):
    out = b""
    for paddr, b in pages:
        out += struct.pack("<IIQQQ", magic, version, paddr, paddr + len(b) - 1, 0) + b
    return out


def cut_dump(entry):
    elf = entry / "running" / "dump.elf"
    notes, loads = elf_parts(elf)
    raw = (entry / "running" / "dump.raw").read_bytes() if (entry / "running" / "dump.raw").exists() else None
    vmci = next((d for n, t, d in notes_iter(notes) if n == b"VMCOREINFO"), b"")
    if not vmci and raw and b"OSRELEASE=" in raw:
        # Not in the ELF notes: the kernel's own vmcoreinfo_data page.
        s = raw.find(b"OSRELEASE=")
        vmci = raw[s : raw.find(b"\0", s)]
    put("vmcoreinfo", entry.name, vmci)
    # A few real pages: the banner's, the first, and 1 MiB.
    banner_at = raw.find(b"Linux version ") & ~4095 if raw else 0x100000
    wanted = [0, 0x1000, 0x100000, banner_at, banner_at + 0x1000]
    pages = [(a, read_phys(elf, loads, a, 4096)) for a in wanted]
    pages = [(a, b) for a, b in pages if b]
    small = make_elf(notes, pages)
    put("elf", entry.name, small)
    put("elf", entry.name + "-notes-only", make_elf(notes, []))
    put("lime", entry.name, lime(pages))
    put("avml", entry.name + "-v1", lime(pages, magic=0x4C4D5641, version=1))
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "small.elf"
        src.write_bytes(small)
        for flag, name in [("-c", "zlib"), ("-l", "lzo"), ("-p", "snappy")]:
            for flat in (False, True):
                out = pathlib.Path(tmp) / f"{name}{'-flat' if flat else ''}.kdump"
                cmd = ["makedumpfile", flag, "-d", "0"] + (["-F"] if flat else []) + [str(src)]
                try:
                    if flat:
                        with open(out, "wb") as f:
                            subprocess.run(cmd, stdout=f, stderr=subprocess.DEVNULL, check=True)
                    else:
                        subprocess.run(cmd + [str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
                    put("kdump", f"{entry.name}-{out.stem}", out.read_bytes())
                except (subprocess.CalledProcessError, FileNotFoundError) as e:
                    print(f"kdump {name} flat={flat}: makedumpfile failed ({e})", file=sys.stderr)
    # IKCONFIG: the kernel's own config, as kernel/configs.c embeds it.
    cfg = entry / "reference" / "config"
    if raw and b"IKCFG_ST" in raw:
        s = raw.find(b"IKCFG_ST")
        e = raw.find(b"IKCFG_ED", s)
        put("ikconfig", entry.name, raw[s : e + 8])
    elif cfg.exists():
        put("ikconfig", entry.name + "-config", b"IKCFG_ST" + gzip.compress(cfg.read_bytes(), 9, mtime=0) + b"IKCFG_ED")
    if raw:
        cut_btf(entry.name, raw)
    print(f"{entry.name}: elf {len(small)} B, {len(pages)} pages", file=sys.stderr)


# ---------------------------------------------------------------- BTF
WALKER_STRUCTS = [b"task_struct", b"signal_struct", b"cred", b"mm_struct", b"kthread", b"worker"]


def find_btf(raw):
    """The kernel's .BTF: the candidate header whose type section parses to exactly its length."""
    pat = b"\x9f\xeb\x01\x00\x18\x00\x00\x00"
    at = raw.find(pat)
    while at >= 0:
        hl, to, tl, so, sl = struct.unpack_from("<IIIII", raw, at + 4)
        if tl > 1 << 20:
            blob = raw[at : at + hl + max(to + tl, so + sl)]
            recs, _ = btf_records(blob)
            if recs is not None:
                return blob
        at = raw.find(pat, at + 1)
    return None


def btf_records(blob):
    hl, to, tl, so, sl = struct.unpack_from("<IIIII", blob, 4)
    types = blob[hl + to : hl + to + tl]
    strs = blob[hl + so : hl + so + sl]
    recs = [None]
    off = 0
    while off < len(types):
        name, info, third = struct.unpack_from("<III", types, off)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        extra = {1: 4, 3: 12, 4: 12 * vlen, 5: 12 * vlen, 6: 8 * vlen, 12: 0, 13: 8 * vlen, 14: 4, 15: 12 * vlen, 17: 4, 19: 12 * vlen}.get(kind, 0)
        if kind == 0 or kind > 19:
            return None, strs
        recs.append([name, info, third, bytearray(types[off + 12 : off + 12 + extra])])
        off += 12 + extra
    return (recs if off == len(types) else None), strs


def cut_btf(name, raw):
    blob = find_btf(raw)
    if not blob:
        print("no .BTF in the raw dump", file=sys.stderr)
        return
    recs, strs = btf_records(blob)
    cstr = lambda o: strs[o : strs.index(b"\0", o)]
    keep, todo = {}, [i for i, r in enumerate(recs) if r and (r[1] >> 24) & 0x1F == 4 and cstr(r[0]) in WALKER_STRUCTS]
    while todo:
        i = todo.pop()
        if i == 0 or i in keep:
            continue
        keep[i] = True
        name_, info, third, extra = recs[i]
        kind = (info >> 24) & 0x1F
        if kind in (4, 5):
            todo += [struct.unpack_from("<I", extra, 12 * k + 4)[0] for k in range((info & 0xFFFF))]
        elif kind == 3:
            todo.append(struct.unpack_from("<I", extra, 0)[0])
            todo.append(struct.unpack_from("<I", extra, 4)[0])
        elif kind in (8, 9, 10, 11, 18):  # typedef, volatile, const, restrict, type_tag
            todo.append(third)
    order = sorted(keep)
    newid = {old: k + 1 for k, old in enumerate(order)}
    newstrs = bytearray(b"\0")
    smap = {0: 0}

    def s(o):
        if o not in smap:
            smap[o] = len(newstrs)
            newstrs.extend(cstr(o) + b"\0")
        return smap[o]

    types = bytearray()
    for old in order:
        name_, info, third, extra = recs[old]
        kind = (info >> 24) & 0x1F
        extra = bytearray(extra)
        if kind == 2:  # pointer: to void
            third = 0
        elif kind in (8, 9, 10, 11, 18):
            third = newid.get(third, 0)
        if kind in (4, 5):
            for k in range(info & 0xFFFF):
                mn, mt = struct.unpack_from("<II", extra, 12 * k)
                struct.pack_into("<II", extra, 12 * k, s(mn), newid.get(mt, 0))
        elif kind == 3:
            e, ix = struct.unpack_from("<II", extra, 0)
            struct.pack_into("<II", extra, 0, newid.get(e, 0), newid.get(ix, 0))
        elif kind in (6, 19):
            step = 8 if kind == 6 else 12
            for k in range(info & 0xFFFF):
                struct.pack_into("<I", extra, step * k, s(struct.unpack_from("<I", extra, step * k)[0]))
        types += struct.pack("<III", s(name_), info, third) + extra
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(newstrs))
    put("btf", name + "-walker-structs", bytes(hdr + types + newstrs))
    # A prefix of the real type section too, strings and all kept as they are (truncated).
    print(f"btf: {len(order)} of {len(recs) - 1} types, {len(types) + len(newstrs)} B", file=sys.stderr)


# ---------------------------------------------------------------- ISF
def cut_isf(entry, harness):
    elf = entry / "running" / "dump.elf"
    out = subprocess.run([harness, "profile", "--image", str(elf), "--method", "btf", "--format", "isf"], capture_output=True, check=True).stdout
    doc = json.loads(out)
    ut = doc.get("user_types", {})
    keep = {}
    todo = [n.decode() for n in WALKER_STRUCTS]
    while todo:
        n = todo.pop()
        if n in keep or n not in ut:
            continue
        keep[n] = ut[n]
        # Embedded structs and unions (not pointers' targets), so every member has a size.
        for f in ut[n].get("fields", {}).values():
            t = f.get("type", {})
            while t.get("kind") == "array":
                t = t.get("subtype", {})
            if t.get("kind") in ("struct", "union") and t.get("name"):
                todo.append(t["name"])
    small = {"metadata": doc.get("metadata", {}), "base_types": doc.get("base_types", {}), "user_types": keep, "enums": {}, "symbols": {}}
    put("isf", entry.name + "-walker-structs.json", json.dumps(small, separators=(",", ":")).encode())
    print(f"isf: {len(keep)} user types", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=os.path.expanduser("~/.cache/netdma/corpus"))
    ap.add_argument("--entry", default="deb-amd64")
    ap.add_argument("--captures", default=str(ROOT.parent / "shared" / "captures"))
    ap.add_argument("--harness", default=None, help="a built harness binary (for the ISF seed)")
    a = ap.parse_args()
    cut_captures(pathlib.Path(a.captures))
    entry = pathlib.Path(a.corpus) / a.entry
    if not (entry / "running" / "dump.elf").exists():
        sys.exit(f"no {entry}/running/dump.elf: build the corpus first (cargo run -p harness -- corpus build)")
    cut_dump(entry)
    if a.harness:
        cut_isf(entry, a.harness)


if __name__ == "__main__":
    main()
