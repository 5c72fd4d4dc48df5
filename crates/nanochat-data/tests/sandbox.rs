//! The sandbox against HumanEval's canonical solutions and against escape attempts.

use std::time::{Duration, Instant};

use nanochat_core::paths::data_dir;
use nanochat_data::tasks::{HumanEval, Task};
use nanochat_data::{Sandbox, SandboxLimits};

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxLimits {
        timeout: Duration::from_secs(3),
        ..SandboxLimits::default()
    })
    .expect("python3 on PATH")
}

#[test]
fn canonical_solutions_pass_and_wrong_ones_fail() {
    let he = HumanEval::load(&data_dir().join("tasks/humaneval/HumanEval.jsonl.gz")).unwrap();
    assert_eq!(he.len(), 164);
    let t0 = Instant::now();
    let mut failed = Vec::new();
    for (i, p) in he.problems().iter().enumerate() {
        // The model's reply is the prompt plus the body, as in the SFT target.
        let reply = format!("```python\n{}{}\n```", p.prompt, p.canonical_solution);
        if !he.evaluate(i, &reply) {
            failed.push(p.task_id.clone());
        }
    }
    assert!(failed.is_empty(), "canonical solutions failed: {failed:?}");
    eprintln!(
        "164/164 canonical solutions pass in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    // Wrong: the body of the next problem, and an empty body.
    let mut wrong_passed = 0;
    for i in 0..40 {
        let p = &he.problems()[i];
        let other = &he.problems()[(i + 1) % 164];
        if he.evaluate(i, &format!("{}{}", p.prompt, other.canonical_solution)) {
            wrong_passed += 1;
        }
        assert!(
            !he.evaluate(i, &format!("{}    pass\n", p.prompt)),
            "{}",
            p.task_id
        );
    }
    assert_eq!(wrong_passed, 0);
}

#[test]
fn timeouts_and_memory_bombs_are_contained() {
    let sb = sandbox();
    let t0 = Instant::now();
    let r = sb.run("while True:\n    pass\n");
    assert!(r.timeout && !r.success, "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(6));
    let r = sb.run("x = bytearray(2 * 1024 * 1024 * 1024)\n");
    assert!(r.memory_exceeded && !r.success, "{r:?}");
    let r = sb.run("x = []\nwhile True:\n    x.append('a' * 10**6)\n");
    assert!(r.memory_exceeded && !r.success, "{r:?}");
    let r = sb.run("print('ok')");
    assert!(r.success && r.stdout == "ok\n", "{r:?}");
    let r = sb.run("raise ValueError('boom')");
    assert_eq!(r.error.as_deref(), Some("ValueError: boom"));
}

#[test]
fn escapes_fail() {
    let sb = sandbox();
    assert!(
        std::env::var_os("PATH").is_some(),
        "the parent has an environment"
    );
    // The environment is empty: nothing of ours leaks in (Python itself sets LC_CTYPE when it
    // coerces the C locale, PEP 538).
    let r = sb.run("import os\nprint([k for k in os.environ if k != 'LC_CTYPE'], os.environ.get('PATH'), os.environ.get('HOME'))");
    assert_eq!(r.stdout, "[] None None\n", "{r:?}");
    if !cfg!(target_os = "linux") {
        return;
    }
    eprintln!("isolation: {}", sb.isolation());
    let must_fail = [
        (
            "socket",
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\ns.connect(('127.0.0.1', 9))",
        ),
        (
            "socket6",
            "import socket\nsocket.create_connection(('::1', 80), timeout=1)",
        ),
        (
            "subprocess",
            "import subprocess\nsubprocess.run(['/bin/echo', 'escaped'], check=True)",
        ),
        (
            "os.system",
            "import os\nrc = os.system('echo escaped')\nif rc != 0:\n    raise PermissionError(f'os.system returned {rc}')",
        ),
        ("fork", "import os\nos.fork()"),
        (
            "thread",
            "import threading\nt = threading.Thread(target=print)\nt.start()",
        ),
        ("kill parent", "import os\nos.kill(os.getppid(), 0)"),
        (
            "write file",
            "open('/tmp/nanochat-sandbox-escape', 'w').write('x')",
        ),
        ("write cwd", "open('here.txt', 'w').write('x')"),
        ("delete", "import os\nos.remove('program.py')"),
    ];
    for (what, code) in must_fail {
        let r = sb.run(code);
        assert!(!r.success, "{what} escaped: {r:?}");
        assert!(
            r.stderr.contains("PermissionError")
                || r.stderr.contains("Operation not permitted")
                || r.stderr.contains("RuntimeError"),
            "{what}: unexpected failure {r:?}"
        );
        assert!(!r.stdout.contains("escaped"), "{what}: {r:?}");
    }
    assert!(!std::path::Path::new("/tmp/nanochat-sandbox-escape").exists());
    // Reading is allowed (stdlib imports need it).
    let r = sb.run("import json, math, collections\nprint(math.sqrt(16))");
    assert!(r.success, "{r:?}");
}
