# The agent (Python): the `tfgateway` daemon, with its unit tests run in the check phase. The
# development explorer is a package of its own (devexplorer.nix), never part of this one.
{
  lib,
  python3Packages,
  redis,
}:

let
  ps = python3Packages;
  pyproject = lib.importTOML ../../agent/pyproject.toml;
in
ps.buildPythonApplication {
  pname = pyproject.project.name;
  inherit (pyproject.project) version;
  pyproject = true;

  # The package lives in agent/; its unit tests and their fixtures live in tests/ at the top
  # level, with the pytest settings in the top-level pyproject.toml.
  src = lib.fileset.toSource {
    root = ../..;
    fileset = lib.fileset.unions [
      ../../agent
      ../../pyproject.toml
      ../../tests/__init__.py
      ../../tests/conftest.py
      ../../tests/support
      ../../tests/unit
      ../../tests/vectors
    ];
  };
  sourceRoot = "source/agent";

  build-system = [ ps.setuptools ];

  dependencies = [
    ps.aiohttp
    ps.base58
    ps.dnspython # proof-of-control lookups
    ps.hiredis # packs and parses the auto-pipeline's redis commands in C
    ps.httptools # parses the result sender's PUT answers (explorer/put_client.py)
    ps.mnemonic
    ps.orjson # decodes poll pages and raw JSON (model/fastjson.py)
    ps.prometheus-client
    ps.publicsuffixlist # public suffixes can never be delegated
    ps.pydantic
    ps.pynacl
    ps.pyroute2
    ps.redis
    ps.uvloop # the event loop (cli.py), and the result sender's (explorer/sender.py)
  ];

  nativeCheckInputs = [
    ps.hypothesis
    ps.pytest-asyncio
    ps.pytest-timeout
    ps.pytestCheckHook
    ps.trustme
    redis # the `redis_server` fixture starts a real redis-server
  ];

  # Run from the repository root so pytest picks up its settings and tests.support; the
  # agent is imported from the installed output, not from the source tree.
  preCheck = ''
    cd ..
  '';
  enabledTestPaths = [ "tests/unit" ];
  disabledTestPaths = [
    "tests/unit/devexplorer" # the development explorer's tests run in its own package
    "tests/unit/test_layers.py" # import-linter, a lint step of scripts/lint.sh
    "tests/unit/test_gojson_vectors.py" # runs the vector generator with Go (scripts/test.sh)
  ];

  pythonImportsCheck = [
    "tfgateway"
    "tfgateway.cli"
  ];

  meta = {
    description = "ThreeFold Grid gateway agent: explorer reservations to DNS, TCP proxies and 4to6 WireGuard";
    license = lib.licenses.asl20;
    mainProgram = "tfgateway";
    platforms = lib.platforms.linux;
  };
}
