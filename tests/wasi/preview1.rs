//! Native `wasi_snapshot_preview1` (cowvfs::wasi::p1): every function with
//! its success and error cases, driven from hand-written WebAssembly.
//!
//! The harness module imports every preview1 function and re-exports it, so
//! each test calls the host function directly with any arguments it likes
//! (bad pointers, huge lengths, bad descriptors) and inspects guest memory.
//! Real C guests run in `preview1_guests.rs`.

use cowvfs::Vfs;
use cowvfs::wasi::p1::{self, Errno, WasiP1Ctx};
use wasmtime::{Engine, Instance, Linker, Memory, Module, Store, Val, ValType};

/// Every preview1 import: name and wasm parameter types (all return i32
/// except proc_exit).
const FUNCS: &[(&str, &str)] = &[
    ("args_get", "ii"),
    ("args_sizes_get", "ii"),
    ("environ_get", "ii"),
    ("environ_sizes_get", "ii"),
    ("clock_res_get", "ii"),
    ("clock_time_get", "iIi"),
    ("fd_advise", "iIIi"),
    ("fd_allocate", "iII"),
    ("fd_close", "i"),
    ("fd_datasync", "i"),
    ("fd_fdstat_get", "ii"),
    ("fd_fdstat_set_flags", "ii"),
    ("fd_fdstat_set_rights", "iII"),
    ("fd_filestat_get", "ii"),
    ("fd_filestat_set_size", "iI"),
    ("fd_filestat_set_times", "iIIi"),
    ("fd_pread", "iiiIi"),
    ("fd_prestat_get", "ii"),
    ("fd_prestat_dir_name", "iii"),
    ("fd_pwrite", "iiiIi"),
    ("fd_read", "iiii"),
    ("fd_readdir", "iiiIi"),
    ("fd_renumber", "ii"),
    ("fd_seek", "iIii"),
    ("fd_sync", "i"),
    ("fd_tell", "ii"),
    ("fd_write", "iiii"),
    ("path_create_directory", "iii"),
    ("path_filestat_get", "iiiii"),
    ("path_filestat_set_times", "iiiiIIi"),
    ("path_link", "iiiiiii"),
    ("path_open", "iiiiiIIii"),
    ("path_readlink", "iiiiii"),
    ("path_remove_directory", "iii"),
    ("path_rename", "iiiiii"),
    ("path_symlink", "iiiii"),
    ("path_unlink_file", "iii"),
    ("poll_oneoff", "iiii"),
    ("proc_raise", "i"),
    ("sched_yield", ""),
    ("random_get", "ii"),
    ("sock_accept", "iii"),
    ("sock_recv", "iiiiii"),
    ("sock_send", "iiiii"),
    ("sock_shutdown", "ii"),
];

/// The harness module with the default memory, 2 pages.
fn harness_wat() -> String {
    harness_wat_with("(memory (export \"memory\") 2)")
}

/// The harness module with the memory `memory` declares.
fn harness_wat_with(memory: &str) -> String {
    let mut w = String::from("(module\n");
    for (name, params) in FUNCS {
        let ps: Vec<&str> = params
            .chars()
            .map(|c| if c == 'I' { "i64" } else { "i32" })
            .collect();
        let params = if ps.is_empty() {
            String::new()
        } else {
            format!("(param {}) ", ps.join(" "))
        };
        w += &format!(
            "  (import \"wasi_snapshot_preview1\" \"{name}\" (func ${name} {params}(result i32)))\n"
        );
    }
    w += "  (import \"wasi_snapshot_preview1\" \"proc_exit\" (func $proc_exit (param i32)))\n";
    w += &format!("  {memory}\n");
    // Host calls need a wasm caller (the functions find memory through
    // it), so each import gets a wasm wrapper.
    for (name, params) in FUNCS {
        let ps: String = params
            .chars()
            .map(|c| if c == 'I' { " i64" } else { " i32" })
            .collect();
        let params = if ps.is_empty() {
            String::new()
        } else {
            format!("(param{ps}) ")
        };
        let gets: String = (0..ps.split_whitespace().count())
            .map(|i| format!("local.get {i} "))
            .collect();
        w += &format!("  (func (export \"{name}\") {params}(result i32) {gets}call ${name})\n");
    }
    w += "  (func (export \"proc_exit\") (param i32) local.get 0 call $proc_exit))\n";
    w
}

/// Scratch addresses in the harness's 128 KiB of memory.
const PATH: u32 = 0x1000;
const PATH2: u32 = 0x1800;
const IOV: u32 = 0x2000;
const OUT: u32 = 0x3000;
const OUT2: u32 = 0x3008;
const BUF: u32 = 0x4000;
const MEM_END: u32 = 2 * 65536;
const ROOT: i64 = 3;

struct P1 {
    store: Store<WasiP1Ctx>,
    instance: Instance,
    memory: Memory,
}

const RIGHTS_RW: i64 = (1 << 1) | (1 << 6); // fd_read | fd_write
const O_CREAT: i64 = 1;
const O_DIRECTORY: i64 = 2;
const O_EXCL: i64 = 4;
const O_TRUNC: i64 = 8;

impl P1 {
    fn new() -> P1 {
        P1::with(|ctx| {
            ctx.preopen("/", "/").unwrap();
        })
    }

    fn with(setup: impl FnOnce(&mut WasiP1Ctx)) -> P1 {
        let mut vfs = Vfs::new();
        vfs.create_dir_all("/d/sub").unwrap();
        vfs.write_file("/d/hello.txt", b"hello, world").unwrap();
        P1::over(vfs, setup)
    }

    fn over(vfs: Vfs, setup: impl FnOnce(&mut WasiP1Ctx)) -> P1 {
        P1::over_module(vfs, &harness_wat(), setup)
    }

    fn over_module(vfs: Vfs, wat: &str, setup: impl FnOnce(&mut WasiP1Ctx)) -> P1 {
        let engine = Engine::default();
        let module = Module::new(&engine, wat).unwrap();
        let mut linker = Linker::<WasiP1Ctx>::new(&engine);
        p1::add_to_linker(&mut linker, |c| c).unwrap();
        let mut ctx = WasiP1Ctx::new(vfs);
        ctx.capture_output();
        setup(&mut ctx);
        let mut store = Store::new(&engine, ctx);
        let instance = linker.instantiate(&mut store, &module).unwrap();
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        P1 {
            store,
            instance,
            memory,
        }
    }

    /// Calls a preview1 function; `Err` is a trap.
    fn try_call(&mut self, name: &str, args: &[i64]) -> Result<i32, wasmtime::Error> {
        let f = self.instance.get_func(&mut self.store, name).unwrap();
        let ty = f.ty(&self.store);
        let params: Vec<Val> = ty
            .params()
            .zip(args)
            .map(|(t, a)| match t {
                ValType::I64 => Val::I64(*a),
                _ => Val::I32(*a as i32),
            })
            .collect();
        assert_eq!(params.len(), args.len(), "{name}: argument count");
        let mut results = vec![Val::I32(0); ty.results().len()];
        f.call(&mut self.store, &params, &mut results)?;
        Ok(results.first().and_then(Val::i32).unwrap_or(0))
    }

    /// Calls and returns the errno; a trap fails the test.
    fn call(&mut self, name: &str, args: &[i64]) -> Errno {
        match self.try_call(name, args) {
            Ok(e) => Errno(e as u16),
            Err(t) => panic!("{name}{args:?} trapped: {t:?}"),
        }
    }

    fn traps(&mut self, name: &str, args: &[i64]) {
        assert!(
            self.try_call(name, args).is_err(),
            "{name}{args:?} should trap"
        );
    }

    fn put(&mut self, at: u32, data: &[u8]) {
        self.memory.data_mut(&mut self.store)[at as usize..at as usize + data.len()]
            .copy_from_slice(data);
    }

    fn get(&self, at: u32, len: usize) -> Vec<u8> {
        self.memory.data(&self.store)[at as usize..at as usize + len].to_vec()
    }

    fn u32(&self, at: u32) -> u32 {
        u32::from_le_bytes(self.get(at, 4).try_into().unwrap())
    }

    fn u64(&self, at: u32) -> u64 {
        u64::from_le_bytes(self.get(at, 8).try_into().unwrap())
    }

    /// Puts `s` at PATH and returns (ptr, len) as call arguments.
    fn path(&mut self, s: &str) -> [i64; 2] {
        self.put(PATH, s.as_bytes());
        [PATH as i64, s.len() as i64]
    }

    fn path2(&mut self, s: &str) -> [i64; 2] {
        self.put(PATH2, s.as_bytes());
        [PATH2 as i64, s.len() as i64]
    }

    /// One iovec at IOV pointing at BUF.
    fn iov(&mut self, data: &[u8]) {
        self.put(BUF, data);
        self.put(IOV, &BUF.to_le_bytes());
        self.put(IOV + 4, &(data.len() as u32).to_le_bytes());
    }

    fn open(
        &mut self,
        dir: i64,
        path: &str,
        oflags: i64,
        rights: i64,
        fdflags: i64,
    ) -> Result<i64, Errno> {
        let [p, l] = self.path(path);
        let e = self.call(
            "path_open",
            &[dir, 1, p, l, oflags, rights, rights, fdflags, OUT as i64],
        );
        if e == Errno::SUCCESS {
            Ok(i64::from(self.u32(OUT)))
        } else {
            Err(e)
        }
    }

    fn write(&mut self, fd: i64, data: &[u8]) -> Result<u32, Errno> {
        self.iov(data);
        match self.call("fd_write", &[fd, IOV as i64, 1, OUT as i64]) {
            Errno::SUCCESS => Ok(self.u32(OUT)),
            e => Err(e),
        }
    }

    fn read(&mut self, fd: i64, len: usize) -> Result<Vec<u8>, Errno> {
        self.iov(&vec![0xAA; len]);
        match self.call("fd_read", &[fd, IOV as i64, 1, OUT as i64]) {
            Errno::SUCCESS => {
                let n = self.u32(OUT) as usize;
                Ok(self.get(BUF, n))
            }
            e => Err(e),
        }
    }

    fn vfs(self) -> Vfs {
        self.store.into_data().into_vfs()
    }
}

#[test]
fn args_and_environ() {
    let mut p = P1::with(|c| {
        c.arg("prog.wasm")
            .arg("héllo")
            .env("A", "1")
            .env("LONG", "value");
    });
    assert_eq!(
        p.call("args_sizes_get", &[OUT as i64, OUT2 as i64]),
        Errno::SUCCESS
    );
    assert_eq!((p.u32(OUT), p.u32(OUT2)), (2, 10 + 7));
    assert_eq!(
        p.call("args_get", &[OUT as i64, BUF as i64]),
        Errno::SUCCESS
    );
    assert_eq!(p.u32(OUT), BUF);
    assert_eq!(p.u32(OUT + 4), BUF + 10);
    assert_eq!(p.get(BUF, 17), b"prog.wasm\0h\xc3\xa9llo\0");
    assert_eq!(
        p.call("environ_sizes_get", &[OUT as i64, OUT2 as i64]),
        Errno::SUCCESS
    );
    assert_eq!((p.u32(OUT), p.u32(OUT2)), (2, 4 + 11));
    assert_eq!(
        p.call("environ_get", &[OUT as i64, BUF as i64]),
        Errno::SUCCESS
    );
    assert_eq!(p.get(BUF, 15), b"A=1\0LONG=value\0");
    // Buffers past the end of memory, and misaligned pointer arrays, trap.
    p.traps("args_get", &[OUT as i64, (MEM_END - 3) as i64]);
    p.traps("args_get", &[(MEM_END - 4) as i64, BUF as i64]);
    p.traps("args_get", &[(OUT + 1) as i64, BUF as i64]);
    p.traps("environ_get", &[OUT as i64, -1]);
    p.traps("args_sizes_get", &[MEM_END as i64, OUT2 as i64]);
    p.traps("environ_sizes_get", &[OUT as i64, (OUT2 + 2) as i64]);
}

#[test]
fn clocks_random_yield_raise() {
    let mut p = P1::new();
    for id in [0, 1] {
        assert_eq!(p.call("clock_res_get", &[id, OUT as i64]), Errno::SUCCESS);
        assert_eq!(p.u64(OUT), 1);
        assert_eq!(
            p.call("clock_time_get", &[id, 1, OUT as i64]),
            Errno::SUCCESS
        );
        assert!(p.u64(OUT) > 0 || id == 1);
    }
    let t = p.u64(OUT);
    assert_eq!(
        p.call("clock_time_get", &[1, 1, OUT as i64]),
        Errno::SUCCESS
    );
    assert!(p.u64(OUT) >= t, "monotonic");
    assert_eq!(
        p.call("clock_time_get", &[0, 0, OUT as i64]),
        Errno::SUCCESS
    );
    assert!(
        p.u64(OUT) > 1_600_000_000 * 1_000_000_000,
        "realtime is now"
    );
    // CPU-time clocks are EBADF (as wasmtime-wasi), unknown ids EINVAL.
    assert_eq!(p.call("clock_res_get", &[2, OUT as i64]), Errno::BADF);
    assert_eq!(p.call("clock_time_get", &[3, 0, OUT as i64]), Errno::BADF);
    assert_eq!(p.call("clock_time_get", &[4, 0, OUT as i64]), Errno::INVAL);
    assert_eq!(p.call("clock_res_get", &[-1, OUT as i64]), Errno::OVERFLOW);
    p.traps("clock_time_get", &[0, 0, (OUT + 4) as i64]);
    p.traps("clock_res_get", &[0, (MEM_END - 4) as i64]);

    p.put(BUF, &[0; 64]);
    assert_eq!(p.call("random_get", &[BUF as i64, 64]), Errno::SUCCESS);
    assert_ne!(p.get(BUF, 64), vec![0; 64]);
    assert_eq!(p.call("random_get", &[BUF as i64, 0]), Errno::SUCCESS);
    // A huge length traps before anything is allocated.
    p.traps("random_get", &[BUF as i64, i64::from(u32::MAX)]);
    p.traps("random_get", &[(MEM_END - 1) as i64, 2]);

    assert_eq!(p.call("sched_yield", &[]), Errno::SUCCESS);
    assert_eq!(p.call("proc_raise", &[6]), Errno::NOTSUP);
    assert_eq!(p.call("proc_raise", &[31]), Errno::INVAL);
    assert_eq!(p.call("proc_raise", &[256]), Errno::OVERFLOW);
}

#[test]
fn prestat_and_fdstat() {
    let mut p = P1::with(|c| {
        c.preopen("/", "/").unwrap();
        c.preopen("/d", "/data").unwrap();
    });
    assert_eq!(p.call("fd_prestat_get", &[3, OUT as i64]), Errno::SUCCESS);
    assert_eq!((p.get(OUT, 1)[0], p.u32(OUT + 4)), (0, 1));
    assert_eq!(p.call("fd_prestat_get", &[4, OUT as i64]), Errno::SUCCESS);
    assert_eq!(p.u32(OUT + 4), 5);
    assert_eq!(
        p.call("fd_prestat_dir_name", &[4, BUF as i64, 5]),
        Errno::SUCCESS
    );
    assert_eq!(p.get(BUF, 5), b"/data");
    assert_eq!(
        p.call("fd_prestat_dir_name", &[4, BUF as i64, 4]),
        Errno::NAMETOOLONG
    );
    assert_eq!(p.call("fd_prestat_get", &[5, OUT as i64]), Errno::BADF);
    assert_eq!(p.call("fd_prestat_get", &[1, OUT as i64]), Errno::BADF);
    assert_eq!(
        p.call("fd_prestat_dir_name", &[1, BUF as i64, 5]),
        Errno::NOTDIR
    );
    assert_eq!(
        p.call("fd_prestat_dir_name", &[9, BUF as i64, 5]),
        Errno::BADF
    );
    p.traps("fd_prestat_get", &[3, (OUT + 2) as i64]);
    p.traps("fd_prestat_dir_name", &[4, (MEM_END - 2) as i64, 5]);

    // stdio: read or write rights only.
    assert_eq!(p.call("fd_fdstat_get", &[0, OUT as i64]), Errno::SUCCESS);
    assert_eq!(p.u64(OUT + 8), 1 << 1);
    assert_eq!(p.call("fd_fdstat_get", &[1, OUT as i64]), Errno::SUCCESS);
    assert_eq!(p.get(OUT, 1)[0], 0, "captured stdout is no tty");
    assert_eq!(p.u64(OUT + 8), 1 << 6);
    // A preopen: directory with wasmtime-wasi's fixed rights.
    assert_eq!(p.call("fd_fdstat_get", &[3, OUT as i64]), Errno::SUCCESS);
    assert_eq!(p.get(OUT, 1)[0], 3);
    assert_ne!(p.u64(OUT + 8) & (1 << 13), 0, "path_open");
    assert_ne!(p.u64(OUT + 16) & (1 << 6), 0, "inherits fd_write");
    // A file opened read-only with append.
    let fd = p.open(ROOT, "d/hello.txt", 0, 1 << 1, 1).unwrap();
    assert_eq!(p.call("fd_fdstat_get", &[fd, OUT as i64]), Errno::SUCCESS);
    assert_eq!(p.get(OUT, 1)[0], 4);
    assert_eq!(u16::from_le_bytes(p.get(OUT + 2, 2).try_into().unwrap()), 1);
    assert_eq!(p.u64(OUT + 8) & (1 << 6), 0, "no fd_write");
    assert_ne!(p.u64(OUT + 8) & (1 << 1), 0, "fd_read");
    assert_eq!(p.call("fd_fdstat_get", &[99, OUT as i64]), Errno::BADF);
    p.traps("fd_fdstat_get", &[fd, (OUT + 4) as i64]);

    // set_flags: APPEND/NONBLOCK on files only; sync flags EINVAL.
    assert_eq!(p.call("fd_fdstat_set_flags", &[fd, 4]), Errno::SUCCESS);
    assert_eq!(p.call("fd_fdstat_get", &[fd, OUT as i64]), Errno::SUCCESS);
    assert_eq!(u16::from_le_bytes(p.get(OUT + 2, 2).try_into().unwrap()), 4);
    assert_eq!(p.call("fd_fdstat_set_flags", &[fd, 16]), Errno::INVAL);
    assert_eq!(p.call("fd_fdstat_set_flags", &[fd, 64]), Errno::INVAL);
    assert_eq!(
        p.call("fd_fdstat_set_flags", &[fd, 1 << 16]),
        Errno::OVERFLOW
    );
    assert_eq!(p.call("fd_fdstat_set_flags", &[1, 1]), Errno::BADF);
    assert_eq!(p.call("fd_fdstat_set_flags", &[3, 1]), Errno::BADF);
    // set_rights is not supported (as in wasmtime-wasi), after checks.
    assert_eq!(p.call("fd_fdstat_set_rights", &[fd, 0, 0]), Errno::NOTSUP);
    assert_eq!(p.call("fd_fdstat_set_rights", &[99, 0, 0]), Errno::BADF);
    assert_eq!(
        p.call("fd_fdstat_set_rights", &[fd, 1 << 40, 0]),
        Errno::INVAL
    );
    assert_eq!(
        p.call("fd_fdstat_set_rights", &[fd, -1, 0]),
        Errno::OVERFLOW
    );
}

#[test]
fn open_read_write_seek_tell() {
    let mut p = P1::new();
    let fd = p
        .open(ROOT, "new.txt", O_CREAT | O_EXCL, RIGHTS_RW, 0)
        .unwrap();
    assert_eq!(fd, 4, "lowest free descriptor after the preopen");
    assert_eq!(
        p.open(ROOT, "new.txt", O_CREAT | O_EXCL, RIGHTS_RW, 0),
        Err(Errno::EXIST)
    );
    assert_eq!(p.write(fd, b"0123456789"), Ok(10));
    // Two iovecs in one call.
    p.put(BUF, b"ab");
    p.put(BUF + 16, b"cd");
    p.put(
        IOV,
        &[
            BUF.to_le_bytes(),
            2u32.to_le_bytes(),
            (BUF + 16).to_le_bytes(),
            2u32.to_le_bytes(),
        ]
        .concat(),
    );
    assert_eq!(
        p.call("fd_write", &[fd, IOV as i64, 2, OUT as i64]),
        Errno::SUCCESS
    );
    assert_eq!(p.u32(OUT), 4);
    assert_eq!(p.call("fd_tell", &[fd, OUT as i64]), Errno::SUCCESS);
    assert_eq!(p.u64(OUT), 14);
    // Seek: set, cur, end; negative results EINVAL; bad whence EINVAL.
    assert_eq!(p.call("fd_seek", &[fd, 2, 0, OUT as i64]), Errno::SUCCESS);
    assert_eq!(p.u64(OUT), 2);
    assert_eq!(p.read(fd, 3), Ok(b"234".to_vec()));
    assert_eq!(p.call("fd_seek", &[fd, -1, 1, OUT as i64]), Errno::SUCCESS);
    assert_eq!(p.u64(OUT), 4);
    assert_eq!(p.call("fd_seek", &[fd, -2, 2, OUT as i64]), Errno::SUCCESS);
    assert_eq!(p.u64(OUT), 12);
    assert_eq!(p.read(fd, 100), Ok(b"cd".to_vec()));
    assert_eq!(p.read(fd, 100), Ok(vec![]), "EOF");
    assert_eq!(p.call("fd_seek", &[fd, -100, 1, OUT as i64]), Errno::INVAL);
    assert_eq!(p.call("fd_seek", &[fd, -1, 0, OUT as i64]), Errno::INVAL);
    assert_eq!(p.call("fd_seek", &[fd, 0, 3, OUT as i64]), Errno::INVAL);
    assert_eq!(
        p.call("fd_seek", &[fd, 0, 256, OUT as i64]),
        Errno::OVERFLOW
    );
    assert_eq!(p.call("fd_seek", &[1, 0, 0, OUT as i64]), Errno::SPIPE);
    assert_eq!(p.call("fd_seek", &[ROOT, 0, 0, OUT as i64]), Errno::BADF);
    assert_eq!(p.call("fd_tell", &[0, OUT as i64]), Errno::SPIPE);
    assert_eq!(p.call("fd_tell", &[ROOT, OUT as i64]), Errno::BADF);
    assert_eq!(p.call("fd_tell", &[77, OUT as i64]), Errno::BADF);
    p.traps("fd_seek", &[fd, 0, 0, (OUT + 4) as i64]);
    p.traps("fd_tell", &[fd, MEM_END as i64]);
    // Past EOF, then a write leaves a hole of zeros.
    assert_eq!(p.call("fd_seek", &[fd, 20, 0, OUT as i64]), Errno::SUCCESS);
    assert_eq!(p.write(fd, b"Z"), Ok(1));
    assert_eq!(p.call("fd_close", &[fd]), Errno::SUCCESS);
    assert_eq!(p.call("fd_close", &[fd]), Errno::BADF);
    assert_eq!(p.write(fd, b"x"), Err(Errno::BADF));
    let v = p.vfs();
    assert_eq!(
        v.read_file("/new.txt").unwrap(),
        b"0123456789abcd\0\0\0\0\0\0Z"
    );
    assert_eq!(v.usage().open_files, 0, "every descriptor closed");
}

#[test]
fn read_write_rights_and_errors() {
    let mut p = P1::new();
    let ro = p.open(ROOT, "d/hello.txt", 0, 1 << 1, 0).unwrap();
    assert_eq!(p.write(ro, b"x"), Err(Errno::BADF));
    let wo = p.open(ROOT, "d/hello.txt", 0, 1 << 6, 0).unwrap();
    assert_eq!(p.read(wo, 4), Err(Errno::BADF));
    assert_eq!(p.read(ROOT, 4), Err(Errno::BADF), "read on a directory");
    assert_eq!(
        p.write(ROOT, b"x"),
        Err(Errno::BADF),
        "write on a directory"
    );
    assert_eq!(p.read(1, 4), Err(Errno::BADF), "read on stdout");
    assert_eq!(p.write(0, b"x"), Err(Errno::BADF), "write on stdin");
    assert_eq!(p.read(0, 4), Ok(vec![]), "stdin at EOF");
    // A bad iovec array traps; a bad buffer traps; a bad fd wins over a
    // bad buffer (the buffer is not looked at).
    p.traps("fd_read", &[ro, (MEM_END - 4) as i64, 1, OUT as i64]);
    p.traps("fd_read", &[ro, (IOV + 2) as i64, 1, OUT as i64]);
    p.traps("fd_read", &[ro, IOV as i64, 0x2000_0000, OUT as i64]);
    p.put(
        IOV,
        &[(MEM_END - 2).to_le_bytes(), 16u32.to_le_bytes()].concat(),
    );
    p.traps("fd_read", &[ro, IOV as i64, 1, OUT as i64]);
    p.traps("fd_write", &[wo, IOV as i64, 1, OUT as i64]);
    assert_eq!(
        p.call("fd_read", &[55, IOV as i64, 1, OUT as i64]),
        Errno::BADF
    );
    // A huge length traps rather than allocating.
    p.put(IOV, &[BUF.to_le_bytes(), u32::MAX.to_le_bytes()].concat());
    p.traps("fd_read", &[ro, IOV as i64, 1, OUT as i64]);
    p.traps("fd_write", &[wo, IOV as i64, 1, OUT as i64]);
    // nread pointer out of bounds traps after the read.
    p.iov(b"....");
    p.traps("fd_read", &[ro, IOV as i64, 1, MEM_END as i64]);
    // stdout and stderr are captured.
    assert_eq!(p.write(1, b"out!"), Ok(4));
    assert_eq!(p.write(2, b"err"), Ok(3));
    let ctx = p.store.into_data();
    assert_eq!(ctx.stdout(), b"out!");
    assert_eq!(ctx.stderr(), b"err");
}

#[test]
fn pread_pwrite_append() {
    let mut p = P1::new();
    let fd = p.open(ROOT, "f", O_CREAT | O_TRUNC, RIGHTS_RW, 0).unwrap();
    assert_eq!(p.write(fd, b"abcdef"), Ok(6));
    p.iov(b"XY");
    assert_eq!(
        p.call("fd_pwrite", &[fd, IOV as i64, 1, 1, OUT as i64]),
        Errno::SUCCESS
    );
    assert_eq!(p.u32(OUT), 2);
    p.iov(&[0; 4]);
    assert_eq!(
        p.call("fd_pread", &[fd, IOV as i64, 1, 0, OUT as i64]),
        Errno::SUCCESS
    );
    assert_eq!((p.u32(OUT), p.get(BUF, 4)), (4, b"aXYd".to_vec()));
    assert_eq!(
        p.call("fd_pread", &[fd, IOV as i64, 1, 100, OUT as i64]),
        Errno::SUCCESS
    );
    assert_eq!(p.u32(OUT), 0, "past EOF");
    assert_eq!(p.call("fd_tell", &[fd, OUT as i64]), Errno::SUCCESS);
    assert_eq!(p.u64(OUT), 6, "pread/pwrite leave the offset");
    assert_eq!(
        p.call("fd_pread", &[0, IOV as i64, 1, 0, OUT as i64]),
        Errno::SPIPE
    );
    assert_eq!(
        p.call("fd_pwrite", &[1, IOV as i64, 1, 0, OUT as i64]),
        Errno::SPIPE
    );
    assert_eq!(
        p.call("fd_pread", &[1, IOV as i64, 1, 0, OUT as i64]),
        Errno::BADF
    );
    assert_eq!(
        p.call("fd_pwrite", &[ROOT, IOV as i64, 1, 0, OUT as i64]),
        Errno::BADF
    );
    p.traps("fd_pread", &[fd, IOV as i64, 1, 0, (OUT + 1) as i64]);
    // APPEND: writes (and pwrite, as on Linux) go to the end.
    assert_eq!(p.call("fd_fdstat_set_flags", &[fd, 1]), Errno::SUCCESS);
    assert_eq!(p.call("fd_seek", &[fd, 0, 0, OUT as i64]), Errno::SUCCESS);
    assert_eq!(p.write(fd, b"12"), Ok(2));
    assert_eq!(p.call("fd_tell", &[fd, OUT as i64]), Errno::SUCCESS);
    assert_eq!(p.u64(OUT), 8);
    p.iov(b"!");
    assert_eq!(
        p.call("fd_pwrite", &[fd, IOV as i64, 1, 0, OUT as i64]),
        Errno::SUCCESS
    );
    let app = p.open(ROOT, "f", 0, RIGHTS_RW, 1).unwrap();
    assert_eq!(p.write(app, b"?"), Ok(1));
    assert_eq!(p.vfs().read_file("/f").unwrap(), b"aXYdef12!?");
}

#[test]
fn filestat_size_times_allocate_sync_advise() {
    let mut p = P1::new();
    let fd = p.open(ROOT, "d/hello.txt", 0, RIGHTS_RW, 0).unwrap();
    assert_eq!(p.call("fd_filestat_get", &[fd, BUF as i64]), Errno::SUCCESS);
    assert_eq!(p.get(BUF + 16, 1)[0], 4, "regular file");
    assert_eq!(p.u64(BUF + 24), 1, "nlink");
    assert_eq!(p.u64(BUF + 32), 12, "size");
    let ino = p.u64(BUF + 8);
    let [a, l] = p.path("d/hello.txt");
    assert_eq!(
        p.call("path_filestat_get", &[ROOT, 1, a, l, BUF as i64]),
        Errno::SUCCESS
    );
    assert_eq!(p.u64(BUF + 8), ino, "same inode by path and by descriptor");
    assert_eq!(
        p.call("fd_filestat_get", &[ROOT, BUF as i64]),
        Errno::SUCCESS
    );
    assert_eq!(p.get(BUF + 16, 1)[0], 3);
    assert_eq!(p.call("fd_filestat_get", &[1, BUF as i64]), Errno::SUCCESS);
    assert_eq!(p.u64(BUF + 32), 0);
    assert_eq!(p.call("fd_filestat_get", &[42, BUF as i64]), Errno::BADF);
    p.traps("fd_filestat_get", &[fd, (BUF + 4) as i64]);

    assert_eq!(p.call("fd_filestat_set_size", &[fd, 5]), Errno::SUCCESS);
    assert_eq!(p.call("fd_filestat_set_size", &[ROOT, 5]), Errno::BADF);
    let ro = p.open(ROOT, "d/hello.txt", 0, 1 << 1, 0).unwrap();
    assert_eq!(p.call("fd_filestat_set_size", &[ro, 1]), Errno::BADF);

    // Times: explicit, now, omit; ATIM with ATIM_NOW is EINVAL.
    assert_eq!(
        p.call(
            "fd_filestat_set_times",
            &[fd, 1_000_000_000_123, 2_000_000_000_000, 1 | 4]
        ),
        Errno::SUCCESS
    );
    assert_eq!(p.call("fd_filestat_get", &[fd, BUF as i64]), Errno::SUCCESS);
    assert_eq!(
        (p.u64(BUF + 40), p.u64(BUF + 48)),
        (1_000_000_000_123, 2_000_000_000_000)
    );
    assert_eq!(
        p.call("fd_filestat_set_times", &[fd, 0, 0, 8]),
        Errno::SUCCESS
    );
    assert_eq!(p.call("fd_filestat_get", &[fd, BUF as i64]), Errno::SUCCESS);
    assert_eq!(p.u64(BUF + 40), 1_000_000_000_123, "atime omitted");
    assert!(p.u64(BUF + 48) > 1_600_000_000 * 1_000_000_000, "mtime now");
    assert_eq!(
        p.call("fd_filestat_set_times", &[fd, 0, 0, 1 | 2]),
        Errno::INVAL
    );
    assert_eq!(
        p.call("fd_filestat_set_times", &[fd, 0, 0, 16]),
        Errno::INVAL
    );
    assert_eq!(p.call("fd_filestat_set_times", &[1, 0, 0, 2]), Errno::BADF);
    assert_eq!(
        p.call("fd_filestat_set_times", &[ROOT, 5_000_000_000, 0, 1]),
        Errno::SUCCESS
    );
    let [a, l] = p.path("d/sub");
    assert_eq!(
        p.call(
            "path_filestat_set_times",
            &[ROOT, 0, a, l, 0, 7_000_000_000, 4]
        ),
        Errno::SUCCESS
    );
    assert_eq!(
        p.call("path_filestat_get", &[ROOT, 0, a, l, BUF as i64]),
        Errno::SUCCESS
    );
    assert_eq!(p.u64(BUF + 48), 7_000_000_000);
    assert_eq!(
        p.call("path_filestat_set_times", &[ROOT, 0, a, l, 0, 0, 4 | 8]),
        Errno::INVAL
    );
    assert_eq!(
        p.call("path_filestat_set_times", &[ROOT, 2, a, l, 0, 0, 4]),
        Errno::INVAL
    );
    let [a, l] = p.path("nope");
    assert_eq!(
        p.call("path_filestat_set_times", &[ROOT, 0, a, l, 0, 0, 4]),
        Errno::NOENT
    );
    assert_eq!(
        p.call("path_filestat_get", &[ROOT, 0, a, l, BUF as i64]),
        Errno::NOENT
    );
    assert_eq!(
        p.call("path_filestat_get", &[fd, 0, a, l, BUF as i64]),
        Errno::BADF
    );

    // allocate grows, never shrinks; needs write.
    assert_eq!(p.call("fd_allocate", &[fd, 0, 100]), Errno::SUCCESS);
    assert_eq!(p.call("fd_allocate", &[fd, 0, 10]), Errno::SUCCESS);
    assert_eq!(p.call("fd_allocate", &[fd, 0, 0]), Errno::INVAL);
    assert_eq!(p.call("fd_allocate", &[ro, 0, 200]), Errno::BADF);
    assert_eq!(p.call("fd_allocate", &[ROOT, 0, 1]), Errno::BADF);
    for f in ["fd_sync", "fd_datasync"] {
        assert_eq!(p.call(f, &[fd]), Errno::SUCCESS);
        assert_eq!(p.call(f, &[ROOT]), Errno::BADF);
        assert_eq!(p.call(f, &[1]), Errno::BADF);
    }
    assert_eq!(p.call("fd_advise", &[fd, 0, 10, 1]), Errno::SUCCESS);
    assert_eq!(p.call("fd_advise", &[fd, 0, 10, 6]), Errno::INVAL);
    assert_eq!(p.call("fd_advise", &[ROOT, 0, 10, 0]), Errno::BADF);
    let v = p.vfs();
    assert_eq!(v.metadata("/d/hello.txt").unwrap().len, 100);
}

#[test]
fn path_operations() {
    let mut p = P1::new();
    let [a, l] = p.path("d/new");
    assert_eq!(
        p.call("path_create_directory", &[ROOT, a, l]),
        Errno::SUCCESS
    );
    assert_eq!(p.call("path_create_directory", &[ROOT, a, l]), Errno::EXIST);
    let [a, l] = p.path("/etc");
    assert_eq!(
        p.call("path_create_directory", &[ROOT, a, l]),
        Errno::PERM,
        "absolute"
    );
    let [a, l] = p.path("../x");
    assert_eq!(
        p.call("path_create_directory", &[ROOT, a, l]),
        Errno::PERM,
        "escape"
    );
    let [a, l] = p.path("d/hello.txt/x");
    assert_eq!(
        p.call("path_create_directory", &[ROOT, a, l]),
        Errno::NOTDIR
    );
    assert_eq!(p.call("path_create_directory", &[1, a, l]), Errno::BADF);
    p.put(PATH, b"\xff\xfe");
    assert_eq!(
        p.call("path_create_directory", &[ROOT, PATH as i64, 2]),
        Errno::ILSEQ
    );
    p.traps("path_create_directory", &[ROOT, (MEM_END - 1) as i64, 2]);
    p.traps(
        "path_create_directory",
        &[ROOT, PATH as i64, i64::from(u32::MAX)],
    );

    // symlink + readlink (cut to the buffer), absolute targets refused.
    let [t, tl] = p.path("hello.txt");
    let [n, nl] = p.path2("d/link");
    assert_eq!(
        p.call("path_symlink", &[t, tl, ROOT, n, nl]),
        Errno::SUCCESS
    );
    assert_eq!(p.call("path_symlink", &[t, tl, ROOT, n, nl]), Errno::EXIST);
    assert_eq!(
        p.call("path_readlink", &[ROOT, n, nl, BUF as i64, 64, OUT as i64]),
        Errno::SUCCESS
    );
    assert_eq!(p.get(BUF, p.u32(OUT) as usize), b"hello.txt");
    assert_eq!(
        p.call("path_readlink", &[ROOT, n, nl, BUF as i64, 4, OUT as i64]),
        Errno::SUCCESS
    );
    assert_eq!(p.u32(OUT), 4);
    p.traps(
        "path_readlink",
        &[ROOT, n, nl, (MEM_END - 2) as i64, 64, OUT as i64],
    );
    let [a, l] = p.path("d/hello.txt");
    assert_eq!(
        p.call("path_readlink", &[ROOT, a, l, BUF as i64, 64, OUT as i64]),
        Errno::INVAL
    );
    let [t, tl] = p.path("/etc/passwd");
    let [n, nl] = p.path2("d/abs");
    assert_eq!(p.call("path_symlink", &[t, tl, ROOT, n, nl]), Errno::PERM);
    // A final symlink is followed with LOOKUP_SYMLINK_FOLLOW only.
    let [a, l] = p.path("d/link");
    assert_eq!(
        p.call("path_filestat_get", &[ROOT, 0, a, l, BUF as i64]),
        Errno::SUCCESS
    );
    assert_eq!(p.get(BUF + 16, 1)[0], 7, "symlink");
    assert_eq!(
        p.call("path_filestat_get", &[ROOT, 1, a, l, BUF as i64]),
        Errno::SUCCESS
    );
    assert_eq!(p.get(BUF + 16, 1)[0], 4, "followed");
    assert_eq!(p.open(ROOT, "d/link", 0, 1 << 1, 0).map(|_| ()), Ok(()));
    let [a, l] = p.path("d/link");
    assert_eq!(
        p.call("path_open", &[ROOT, 0, a, l, 0, 2, 2, 0, OUT as i64]),
        Errno::LOOP,
        "O_NOFOLLOW on a symlink"
    );

    // link: same inode, nlink 2.
    let [o, ol] = p.path("d/hello.txt");
    let [n, nl] = p.path2("d/hard");
    assert_eq!(
        p.call("path_link", &[ROOT, 0, o, ol, ROOT, n, nl]),
        Errno::SUCCESS
    );
    assert_eq!(
        p.call("path_link", &[ROOT, 0, o, ol, ROOT, n, nl]),
        Errno::EXIST
    );
    assert_eq!(
        p.call("path_filestat_get", &[ROOT, 0, n, nl, BUF as i64]),
        Errno::SUCCESS
    );
    assert_eq!(p.u64(BUF + 24), 2);
    let [o, ol] = p.path("d/sub");
    let [n, nl] = p.path2("d/sublink");
    assert_eq!(
        p.call("path_link", &[ROOT, 0, o, ol, ROOT, n, nl]),
        Errno::PERM,
        "directory"
    );
    assert_eq!(
        p.call("path_link", &[ROOT, 2, o, ol, ROOT, n, nl]),
        Errno::INVAL
    );

    // rename: file over file, dir into itself, missing source.
    let [o, ol] = p.path("d/hard");
    let [n, nl] = p.path2("d/sub/moved");
    assert_eq!(
        p.call("path_rename", &[ROOT, o, ol, ROOT, n, nl]),
        Errno::SUCCESS
    );
    assert_eq!(
        p.call("path_rename", &[ROOT, o, ol, ROOT, n, nl]),
        Errno::NOENT
    );
    let [o, ol] = p.path("d");
    let [n, nl] = p.path2("d/sub/inside");
    assert_eq!(
        p.call("path_rename", &[ROOT, o, ol, ROOT, n, nl]),
        Errno::INVAL
    );
    assert_eq!(p.call("path_rename", &[ROOT, o, ol, 1, n, nl]), Errno::BADF);

    // unlink and rmdir.
    let [a, l] = p.path("d/sub");
    assert_eq!(
        p.call("path_remove_directory", &[ROOT, a, l]),
        Errno::NOTEMPTY
    );
    assert_eq!(p.call("path_unlink_file", &[ROOT, a, l]), Errno::ISDIR);
    let [a, l] = p.path("d/sub/moved");
    assert_eq!(
        p.call("path_remove_directory", &[ROOT, a, l]),
        Errno::NOTDIR
    );
    assert_eq!(p.call("path_unlink_file", &[ROOT, a, l]), Errno::SUCCESS);
    assert_eq!(p.call("path_unlink_file", &[ROOT, a, l]), Errno::NOENT);
    let [a, l] = p.path("d/sub");
    assert_eq!(
        p.call("path_remove_directory", &[ROOT, a, l]),
        Errno::SUCCESS
    );
    assert_eq!(p.call("path_remove_directory", &[ROOT, a, l]), Errno::NOENT);
    let v = p.vfs();
    assert!(v.exists("/d/new"));
    assert!(!v.exists("/d/sub"));
    assert_eq!(v.read_link("/d/link").unwrap(), "hello.txt");
}

#[test]
fn path_open_flags_and_errors() {
    let mut p = P1::new();
    assert_eq!(p.open(ROOT, "missing", 0, 2, 0), Err(Errno::NOENT));
    assert_eq!(
        p.open(ROOT, "d/hello.txt", O_DIRECTORY, 2, 0),
        Err(Errno::NOTDIR)
    );
    assert_eq!(p.open(ROOT, "d", 0, RIGHTS_RW, 0), Err(Errno::ISDIR));
    assert_eq!(p.open(ROOT, "../escape", 0, 2, 0), Err(Errno::PERM));
    assert_eq!(p.open(ROOT, "/abs", 0, 2, 0), Err(Errno::PERM));
    assert_eq!(
        p.open(ROOT, "x", 16, 2, 0),
        Err(Errno::INVAL),
        "unknown oflag"
    );
    assert_eq!(
        p.open(ROOT, "x", 0, 1 << 30, 0),
        Err(Errno::INVAL),
        "unknown right"
    );
    assert_eq!(
        p.open(ROOT, "x", 0, 2, 32),
        Err(Errno::INVAL),
        "unknown fdflag"
    );
    assert_eq!(p.open(ROOT, "x", 1 << 16, 2, 0), Err(Errno::OVERFLOW));
    let [a, l] = p.path("x");
    assert_eq!(
        p.call("path_open", &[ROOT, 2, a, l, 0, 2, 2, 0, OUT as i64]),
        Errno::INVAL,
        "lookupflags"
    );
    assert_eq!(
        p.call("path_open", &[1, 1, a, l, 0, 2, 2, 0, OUT as i64]),
        Errno::BADF
    );
    let f = p.open(ROOT, "d/hello.txt", 0, 2, 0).unwrap();
    assert_eq!(
        p.open(f, "x", 0, 2, 0),
        Err(Errno::NOTDIR),
        "a file as the directory"
    );
    p.traps(
        "path_open",
        &[ROOT, 1, (MEM_END - 1) as i64, 4, 0, 2, 2, 0, OUT as i64],
    );
    let [a, l] = p.path("d/hello.txt");
    p.traps("path_open", &[ROOT, 1, a, l, 0, 2, 2, 0, (OUT + 2) as i64]);
    // A directory opened by path works as a base for further opens.
    let d = p.open(ROOT, "d", O_DIRECTORY, 2, 0).unwrap();
    let g = p.open(d, "hello.txt", 0, 2, 0).unwrap();
    assert_eq!(p.read(g, 5), Ok(b"hello".to_vec()));
    assert_eq!(p.call("fd_fdstat_get", &[d, OUT as i64]), Errno::SUCCESS);
    assert_eq!(p.get(OUT, 1)[0], 3);
    // Truncate.
    let t = p.open(d, "hello.txt", O_TRUNC, RIGHTS_RW, 0).unwrap();
    assert_eq!(p.read(t, 5), Ok(vec![]));
}

#[test]
fn read_only_preopen() {
    let mut p = P1::with(|c| {
        c.preopen_read_only("/", "/").unwrap();
    });
    assert_eq!(
        p.open(ROOT, "d/hello.txt", 0, RIGHTS_RW, 0),
        Err(Errno::ROFS)
    );
    assert_eq!(p.open(ROOT, "n", O_CREAT, 2, 0), Err(Errno::ROFS));
    let [a, l] = p.path("d/x");
    assert_eq!(p.call("path_create_directory", &[ROOT, a, l]), Errno::ROFS);
    let r = p.open(ROOT, "d/hello.txt", 0, 2, 0).unwrap();
    assert_eq!(p.read(r, 5), Ok(b"hello".to_vec()));
}

/// Parses `fd_readdir` output into (next, ino, type, name); a cut entry
/// ends the list.
fn dirents(buf: &[u8]) -> Vec<(u64, u64, u8, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 24 <= buf.len() {
        let next = u64::from_le_bytes(buf[at..at + 8].try_into().unwrap());
        let ino = u64::from_le_bytes(buf[at + 8..at + 16].try_into().unwrap());
        let len = u32::from_le_bytes(buf[at + 16..at + 20].try_into().unwrap()) as usize;
        if at + 24 + len > buf.len() {
            break;
        }
        let name = String::from_utf8(buf[at + 24..at + 24 + len].to_vec()).unwrap();
        out.push((next, ino, buf[at + 20], name));
        at += 24 + len;
    }
    out
}

impl P1 {
    fn readdir(&mut self, fd: i64, cookie: u64, len: u32) -> (u32, Vec<(u64, u64, u8, String)>) {
        self.put(BUF, &vec![0xEE; len as usize + 64]);
        let e = self.call(
            "fd_readdir",
            &[fd, BUF as i64, len as i64, cookie as i64, OUT as i64],
        );
        assert_eq!(e, Errno::SUCCESS);
        let used = self.u32(OUT);
        assert!(used <= len);
        (used, dirents(&self.get(BUF, used as usize)))
    }

    /// Lists a whole directory with small buffers, resuming at cookies.
    fn list(&mut self, fd: i64, len: u32) -> Vec<String> {
        let mut names = Vec::new();
        let mut cookie = 0;
        loop {
            let (used, ents) = self.readdir(fd, cookie, len);
            if ents.is_empty() {
                assert!(used < len, "one entry must fit");
                return names;
            }
            for (next, _, _, name) in &ents {
                names.push(name.clone());
                cookie = *next;
            }
            if used < len {
                return names;
            }
        }
    }
}

#[test]
fn readdir_cookies_are_stable() {
    let mut vfs = Vfs::new();
    vfs.create_dir("/big").unwrap();
    for i in 0..200 {
        vfs.write_file(&format!("/big/f{i:03}"), b"x").unwrap();
    }
    let mut p = P1::over(vfs, |c| {
        c.preopen("/big", "/big").unwrap();
    });
    // The whole listing, `.` and `..` first, names sorted, nothing stale.
    let (used, all) = p.readdir(ROOT, 0, 16384);
    assert_eq!(all.len(), 202);
    assert_eq!(
        used as usize,
        all.iter().map(|e| 24 + e.3.len()).sum::<usize>()
    );
    assert_eq!(&all[0].3, ".");
    assert_eq!(&all[1].3, "..");
    assert_eq!(all[0].2, 3);
    assert_eq!(&all[2].3, "f000");
    assert_eq!(all[2].2, 4);
    let small = p.list(ROOT, 100);
    assert_eq!(small.len(), 202);
    // A descriptor remembers only its latest cookies: an old one resumes
    // at its position (the listing has not changed, so: after f045).
    let (_, some) = p.readdir(ROOT, all[2 + 45].0, 6 * 28);
    let names: Vec<&str> = some.iter().map(|e| e.3.as_str()).collect();
    assert_eq!(names, ["f046", "f047", "f048", "f049", "f050", "f051"]);
    assert_eq!(some[4].0, all[2 + 50].0);
    // Recent cookies survive changes: resume after f050 while f000..f049
    // are gone and new entries arrive before and after the cursor.
    let cookie_after_f050 = some[4].0;
    for i in 0..50 {
        let [a, l] = p.path(&format!("f{i:03}"));
        assert_eq!(p.call("path_unlink_file", &[ROOT, a, l]), Errno::SUCCESS);
    }
    let [a, l] = p.path("a-new");
    assert_eq!(
        p.call("path_create_directory", &[ROOT, a, l]),
        Errno::SUCCESS
    );
    let [a, l] = p.path("z-new");
    assert_eq!(
        p.call("path_create_directory", &[ROOT, a, l]),
        Errno::SUCCESS
    );
    let (_, rest) = p.readdir(ROOT, cookie_after_f050, 16384);
    let names: Vec<&str> = rest.iter().map(|e| e.3.as_str()).collect();
    assert_eq!(names.first(), Some(&"f051"));
    assert_eq!(names.last(), Some(&"z-new"));
    assert_eq!(names.len(), 149 + 1);
    // A forgotten cookie is a position in the listing as it is now:
    // the 11th name (a-new, f050, ..., f059) is followed by f060.
    let (_, later) = p.readdir(ROOT, all[2 + 10].0, 28);
    assert_eq!(later[0].3, "f060");
    assert_eq!(later[0].0, all[2 + 10].0 + 1);
    // A cut entry: the buffer is full, no byte past it is touched.
    let (used, ents) = p.readdir(ROOT, 0, 30);
    assert_eq!((used, ents.len()), (30, 1));
    assert_eq!(p.get(BUF + 30, 4), vec![0xEE; 4]);
    // An unknown cookie lists nothing; errors.
    let (used, _) = p.readdir(ROOT, 1 << 40, 100);
    assert_eq!(used, 0);
    assert_eq!(
        p.call("fd_readdir", &[1, BUF as i64, 100, 0, OUT as i64]),
        Errno::BADF
    );
    let f = p.open(ROOT, "f100", 0, 2, 0).unwrap();
    assert_eq!(
        p.call("fd_readdir", &[f, BUF as i64, 100, 0, OUT as i64]),
        Errno::BADF
    );
    p.traps(
        "fd_readdir",
        &[ROOT, (MEM_END - 10) as i64, 100, 0, OUT as i64],
    );
    p.traps("fd_readdir", &[ROOT, BUF as i64, 100, 0, (OUT + 1) as i64]);
}

#[test]
fn renumber_and_close() {
    let mut p = P1::new();
    let a = p.open(ROOT, "d/hello.txt", 0, 2, 0).unwrap();
    let b = p.open(ROOT, "d", O_DIRECTORY, 2, 0).unwrap();
    assert_eq!((a, b), (4, 5));
    assert_eq!(
        p.call("fd_renumber", &[a, 9]),
        Errno::BADF,
        "target must be open"
    );
    assert_eq!(p.call("fd_renumber", &[9, a]), Errno::BADF);
    assert_eq!(p.call("fd_renumber", &[a, a]), Errno::SUCCESS);
    assert_eq!(p.call("fd_renumber", &[a, b]), Errno::SUCCESS);
    assert_eq!(p.read(b, 5), Ok(b"hello".to_vec()));
    assert_eq!(p.read(a, 5), Err(Errno::BADF));
    // Replace stdout with the file, then close stdin: numbers are reused
    // lowest first.
    assert_eq!(p.call("fd_renumber", &[b, 1]), Errno::SUCCESS);
    assert_eq!(p.read(1, 7), Ok(b", world".to_vec()));
    assert_eq!(p.call("fd_close", &[0]), Errno::SUCCESS);
    assert_eq!(p.open(ROOT, "d", O_DIRECTORY, 2, 0), Ok(0));
    assert_eq!(p.open(ROOT, "d", O_DIRECTORY, 2, 0), Ok(4));
    assert_eq!(p.call("fd_close", &[ROOT]), Errno::SUCCESS);
    assert_eq!(p.call("fd_prestat_get", &[ROOT, OUT as i64]), Errno::BADF);
    assert_eq!(p.call("fd_close", &[-1]), Errno::BADF);
    assert_eq!(p.vfs().usage().open_files, 0);
}

#[test]
fn poll_oneoff_clocks_and_fds() {
    let mut p = P1::new();
    let sub = |userdata: u64, tag: u8, a: u32, timeout: u64, flags: u16| {
        let mut s = vec![0u8; 48];
        s[0..8].copy_from_slice(&userdata.to_le_bytes());
        s[8] = tag;
        s[16..20].copy_from_slice(&a.to_le_bytes());
        s[24..32].copy_from_slice(&timeout.to_le_bytes());
        s[40..42].copy_from_slice(&flags.to_le_bytes());
        s
    };
    // One relative monotonic clock: sleeps, then reports it.
    p.put(BUF, &sub(7, 0, 1, 2_000_000, 0));
    let t = std::time::Instant::now();
    assert_eq!(
        p.call("poll_oneoff", &[BUF as i64, 0x6000, 1, OUT as i64]),
        Errno::SUCCESS
    );
    assert!(t.elapsed() >= std::time::Duration::from_millis(2));
    assert_eq!(p.u32(OUT), 1);
    assert_eq!(p.u64(0x6000), 7);
    assert_eq!(p.get(0x6000 + 10, 1)[0], 0);
    // Two clocks: only the earlier one fires.
    p.put(
        BUF,
        &[sub(1, 0, 1, 60_000_000_000, 0), sub(2, 0, 0, 1_000_000, 0)].concat(),
    );
    assert_eq!(
        p.call("poll_oneoff", &[BUF as i64, 0x6000, 2, OUT as i64]),
        Errno::SUCCESS
    );
    assert_eq!((p.u32(OUT), p.u64(0x6000)), (1, 2));
    // An absolute realtime clock in the past fires at once.
    p.put(BUF, &sub(3, 0, 0, 1, 1));
    assert_eq!(
        p.call("poll_oneoff", &[BUF as i64, 0x6000, 1, OUT as i64]),
        Errno::SUCCESS
    );
    assert_eq!(p.u32(OUT), 1);
    // A file is ready at once, with the bytes left; the long clock does
    // not fire.
    let fd = p.open(ROOT, "d/hello.txt", 0, 2, 0).unwrap() as u32;
    p.put(
        BUF,
        &[
            sub(10, 0, 1, 60_000_000_000, 0),
            sub(11, 1, fd, 0, 0),
            sub(12, 2, 1, 0, 0),
        ]
        .concat(),
    );
    assert_eq!(
        p.call("poll_oneoff", &[BUF as i64, 0x6000, 3, OUT as i64]),
        Errno::SUCCESS
    );
    assert_eq!(p.u32(OUT), 2);
    assert_eq!(
        (p.u64(0x6000), p.get(0x6000 + 10, 1)[0], p.u64(0x6000 + 16)),
        (11, 1, 12)
    );
    assert_eq!((p.u64(0x6020), p.get(0x6020 + 10, 1)[0]), (12, 2));
    // Errors: none subscribed, bad fd, stdout for reading, bad clock, bad
    // tag, bad clock flags; bad pointers trap.
    assert_eq!(
        p.call("poll_oneoff", &[BUF as i64, 0x6000, 0, OUT as i64]),
        Errno::INVAL
    );
    p.put(BUF, &sub(1, 1, 99, 0, 0));
    assert_eq!(
        p.call("poll_oneoff", &[BUF as i64, 0x6000, 1, OUT as i64]),
        Errno::BADF
    );
    p.put(BUF, &sub(1, 1, 1, 0, 0));
    assert_eq!(
        p.call("poll_oneoff", &[BUF as i64, 0x6000, 1, OUT as i64]),
        Errno::BADF
    );
    p.put(BUF, &sub(1, 0, 2, 1, 0));
    assert_eq!(
        p.call("poll_oneoff", &[BUF as i64, 0x6000, 1, OUT as i64]),
        Errno::INVAL
    );
    p.put(BUF, &sub(1, 3, 0, 1, 0));
    assert_eq!(
        p.call("poll_oneoff", &[BUF as i64, 0x6000, 1, OUT as i64]),
        Errno::INVAL
    );
    p.put(BUF, &sub(1, 0, 1, 1, 2));
    assert_eq!(
        p.call("poll_oneoff", &[BUF as i64, 0x6000, 1, OUT as i64]),
        Errno::INVAL
    );
    p.traps(
        "poll_oneoff",
        &[(MEM_END - 40) as i64, 0x6000, 1, OUT as i64],
    );
    p.traps("poll_oneoff", &[(BUF + 4) as i64, 0x6000, 1, OUT as i64]);
    p.traps(
        "poll_oneoff",
        &[BUF as i64, 0x6000, 0x1000_0000, OUT as i64],
    );
}

#[test]
fn sockets_are_not_there() {
    let mut p = P1::new();
    assert_eq!(p.call("sock_accept", &[3, 0, OUT as i64]), Errno::NOTSOCK);
    assert_eq!(p.call("sock_accept", &[9, 0, OUT as i64]), Errno::BADF);
    assert_eq!(p.call("sock_accept", &[3, 64, OUT as i64]), Errno::INVAL);
    assert_eq!(
        p.call("sock_recv", &[1, IOV as i64, 1, 0, OUT as i64, OUT2 as i64]),
        Errno::NOTSOCK
    );
    assert_eq!(
        p.call("sock_recv", &[9, IOV as i64, 1, 0, OUT as i64, OUT2 as i64]),
        Errno::BADF
    );
    assert_eq!(
        p.call("sock_send", &[1, IOV as i64, 1, 0, OUT as i64]),
        Errno::NOTSOCK
    );
    assert_eq!(
        p.call("sock_send", &[1, IOV as i64, 1, 1, OUT as i64]),
        Errno::INVAL
    );
    assert_eq!(p.call("sock_shutdown", &[1, 3]), Errno::NOTSOCK);
    assert_eq!(p.call("sock_shutdown", &[9, 1]), Errno::BADF);
    assert_eq!(p.call("sock_shutdown", &[1, 4]), Errno::INVAL);
}

#[test]
fn host_mount_works_natively() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("on-host.txt"), b"host bytes").unwrap();
    let mut p = P1::with(|c| {
        c.preopen("/", "/").unwrap();
        c.mount(dir.path(), "/mnt", false).unwrap();
    });
    let m = 4;
    assert_eq!(
        p.call("fd_prestat_dir_name", &[m, BUF as i64, 4]),
        Errno::SUCCESS
    );
    assert_eq!(p.get(BUF, 4), b"/mnt");
    let f = p.open(m, "on-host.txt", 0, RIGHTS_RW, 0).unwrap();
    assert_eq!(p.read(f, 4), Ok(b"host".to_vec()));
    assert_eq!(p.write(f, b"!!"), Ok(2));
    let n = p.open(m, "new.txt", O_CREAT, RIGHTS_RW, 1).unwrap();
    assert_eq!(p.write(n, b"abc"), Ok(3));
    assert_eq!(p.write(n, b"def"), Ok(3));
    let names = p.list(m, 40);
    assert_eq!(names, [".", "..", "new.txt", "on-host.txt"]);
    let [a, l] = p.path("new.txt");
    let [b, bl] = p.path2("d/x");
    assert_eq!(p.call("path_rename", &[m, a, l, ROOT, b, bl]), Errno::XDEV);
    assert_eq!(
        p.call("path_filestat_get", &[m, 0, a, l, BUF as i64]),
        Errno::SUCCESS
    );
    assert_eq!(p.u64(BUF + 32), 6);
    drop(p);
    assert_eq!(
        std::fs::read(dir.path().join("on-host.txt")).unwrap(),
        b"host!!ytes"
    );
    assert_eq!(
        std::fs::read(dir.path().join("new.txt")).unwrap(),
        b"abcdef"
    );
}

/// A FIFO with no writer in a host mount: opening it returns at once
/// (it would block the host thread past any deadline otherwise), asking
/// for it as a directory is `ENOTDIR`, and reading it fails cleanly.
#[test]
fn a_fifo_in_a_mount_never_blocks_open() {
    let dir = tempfile::tempdir().unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.path().join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let mut p = P1::with(|c| {
            c.preopen("/", "/").unwrap();
            c.mount(&path, "/mnt", false).unwrap();
        });
        let m = 4;
        // Read only (2 is fd_read): read-write opens never wait anyway.
        let as_dir = p.open(m, "fifo", O_DIRECTORY, 2, 0).err();
        let f = p.open(m, "fifo", 0, 2, 0);
        let read = f.map(|f| p.read(f, 4));
        let _ = tx.send((as_dir, read));
    });
    let (as_dir, read) = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("opening a FIFO in a mount blocked");
    assert_eq!(as_dir, Some(Errno::NOTDIR));
    // Opened without waiting for a writer; a read finds nothing to read
    // (no writer: end of file, or an error), never blocks.
    if let Ok(Ok(bytes)) = read {
        assert!(bytes.is_empty(), "{bytes:?}");
    }
}

/// Paths into a host mount are bounded before the host sees them, as the
/// memory tree bounds them; and one read or write call takes at most
/// `IOV_MAX` (1,024) buffers, each of which costs a call however short.
#[test]
fn mount_paths_and_iovec_counts_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    let path = dir.path().to_path_buf();
    let mut p = P1::with(|c| {
        c.preopen("/", "/").unwrap();
        c.mount(&path, "/mnt", false).unwrap();
    });
    let m = 4;
    let long = "a/".repeat(2500);
    for (dir, what) in [(m, "mount"), (ROOT, "memory tree")] {
        let [ptr, len] = p.path(&long);
        let e = p.call("path_filestat_get", &[dir, 0, ptr, len, OUT as i64]);
        assert_eq!(e, Errno::NAMETOOLONG, "{what}");
        let [ptr, len] = p.path("f\0g");
        let e = p.call("path_filestat_get", &[dir, 0, ptr, len, OUT as i64]);
        assert_eq!(e, Errno::INVAL, "{what}");
    }
    let [ptr, len] = p.path("f");
    let e = p.call("path_filestat_get", &[m, 0, ptr, len, OUT as i64]);
    assert_eq!(e, Errno::SUCCESS);
    // 1,024 empty buffers are a write of nothing; 1,025 are EINVAL.
    let fd = p.open(m, "f", 0, RIGHTS_RW, 0).unwrap();
    const IOVS: u32 = 0x5000;
    for i in 0..1025u32 {
        p.put(IOVS + 8 * i, &BUF.to_le_bytes());
        p.put(IOVS + 8 * i + 4, &0u32.to_le_bytes());
    }
    for call in ["fd_write", "fd_read"] {
        let e = p.call(call, &[fd, IOVS as i64, 1024, OUT as i64]);
        assert_eq!((e, p.u32(OUT)), (Errno::SUCCESS, 0), "{call}");
        let e = p.call(call, &[fd, IOVS as i64, 1025, OUT as i64]);
        assert_eq!(e, Errno::INVAL, "{call}");
    }
    for call in ["fd_pwrite", "fd_pread"] {
        let e = p.call(call, &[fd, IOVS as i64, 1025, 0, OUT as i64]);
        assert_eq!(e, Errno::INVAL, "{call}");
    }
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"x");
}

/// A 64-bit memory past 4 GiB: preview1's pointers are 32-bit, so the
/// calls see its first 4 GiB only. A subscription array that would run
/// past 4 GiB traps; before, its offsets wrapped (a panic in a debug
/// build, the wrong bytes in a release one).
#[test]
fn a_memory_past_4_gib_is_seen_up_to_4_gib() {
    let wat = harness_wat_with("(memory (export \"memory\") i64 65537)");
    let mut p = P1::over_module(Vfs::new(), &wat, |c| {
        c.preopen("/", "/").unwrap();
    });
    assert!(p.memory.data_size(&p.store) > 1 << 32);
    let at = (1u64 << 32) - 8;
    p.traps("poll_oneoff", &[at as u32 as i32 as i64, 0, 1, 8]);
    // Below 4 GiB everything works as before.
    let [ptr, len] = p.path(".");
    let e = p.call("path_filestat_get", &[ROOT, 0, ptr, len, OUT as i64]);
    assert_eq!(e, Errno::SUCCESS);
}

/// With `max_open_files` above the table's 65,536, a full table is
/// `EMFILE` before the open: an `O_CREAT|O_TRUNC` open that cannot get a
/// descriptor leaves the file as it was.
#[test]
fn a_full_descriptor_table_fails_before_the_open_changes_anything() {
    let limits = cowvfs::Limits {
        max_open_files: 100_000,
        ..cowvfs::Limits::default()
    };
    let mut vfs = Vfs::with_limits(limits);
    vfs.write_file("/kept", b"contents").unwrap();
    let mut p = P1::over(vfs, |c| {
        c.preopen("/", "/").unwrap();
    });
    let mut last = 0;
    loop {
        match p.open(ROOT, "kept", 0, RIGHTS_RW, 0) {
            Ok(fd) => last = fd,
            Err(e) => {
                assert_eq!(e, Errno::MFILE);
                break;
            }
        }
    }
    assert_eq!(last, cowvfs::wasi::p1::MAX_DESCRIPTORS as i64 - 1);
    let e = p.open(ROOT, "kept", O_CREAT | O_TRUNC, RIGHTS_RW, 0);
    assert_eq!(e, Err(Errno::MFILE));
    let e = p.open(ROOT, "new", O_CREAT, RIGHTS_RW, 0);
    assert_eq!(e, Err(Errno::MFILE));
    let vfs = p.vfs();
    assert_eq!(vfs.read_file("/kept").unwrap(), b"contents");
    assert!(!vfs.exists("/new"));
}

/// One `poll_oneoff` reads each subscription twice in a call no deadline
/// interrupts: more than the descriptor table holds is `EINVAL`.
#[test]
fn poll_oneoff_takes_at_most_a_table_of_subscriptions() {
    let wat = harness_wat_with("(memory (export \"memory\") 1200)");
    let mut p = P1::over_module(Vfs::new(), &wat, |c| {
        c.preopen("/", "/").unwrap();
    });
    let n = p1::MAX_DESCRIPTORS as i64 + 1;
    let subs = 0x10000i64;
    let events = subs + 48 * n;
    let e = p.call("poll_oneoff", &[subs, events, n, OUT as i64]);
    assert_eq!(e, Errno::INVAL);
}

fn exit_module(code: i64) -> String {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") i32.const {code} call $exit unreachable))"#
    )
}

#[test]
fn exit_codes_are_exact() {
    let engine = Engine::default();
    for code in [0, 1, 42, 255, 256, -1] {
        let module = Module::new(&engine, exit_module(code)).unwrap();
        let guest = p1::Guest::new(&engine, &module, "exit.wasm").unwrap();
        let out = p1::Sandbox::new(Vfs::new()).run(&guest);
        assert_eq!(out.status.unwrap(), code as i32);
    }
    // A plain return is 0; a trap is a trap, not a panic.
    let module = Module::new(
        &engine,
        r#"(module (memory (export "memory") 1) (func (export "_start")))"#,
    )
    .unwrap();
    let guest = p1::Guest::new(&engine, &module, "ret.wasm").unwrap();
    assert_eq!(p1::Sandbox::new(Vfs::new()).run(&guest).status.unwrap(), 0);
    let module = Module::new(
        &engine,
        r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
    )
    .unwrap();
    let guest = p1::Guest::new(&engine, &module, "trap.wasm").unwrap();
    assert!(p1::Sandbox::new(Vfs::new()).run(&guest).status.is_err());
}

#[test]
fn a_module_without_memory_traps_cleanly() {
    let engine = Engine::default();
    let module = Module::new(
        &engine,
        r#"(module
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (func (export "_start") i32.const 1 call $close drop))"#,
    )
    .unwrap();
    let guest = p1::Guest::new(&engine, &module, "nomem.wasm").unwrap();
    let out = p1::Sandbox::new(Vfs::new()).run(&guest);
    assert!(format!("{:?}", out.status.unwrap_err()).contains("memory"));
}
