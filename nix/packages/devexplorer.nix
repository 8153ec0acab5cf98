# The development explorer (`tfgateway-devexplorer`): a test double of the TFExplorer with an
# unauthenticated admin API, for the NixOS VM test. Never part of the agent's package or the
# appliance; its unit tests run in the check phase.
{
  lib,
  python3Packages,
  tfgateway-agent,
}:

let
  ps = python3Packages;
  pyproject = lib.importTOML ../../devexplorer/pyproject.toml;
in
ps.buildPythonApplication {
  pname = pyproject.project.name;
  inherit (pyproject.project) version;
  pyproject = true;

  src = lib.fileset.toSource {
    root = ../..;
    fileset = lib.fileset.unions [
      ../../devexplorer
      ../../pyproject.toml
      ../../tests/__init__.py
      ../../tests/unit/__init__.py
      ../../tests/unit/devexplorer
      ../../tests/support/__init__.py
      ../../tests/support/gojson_vectors.py
      ../../tests/vectors
    ];
  };
  sourceRoot = "source/devexplorer";

  build-system = [ ps.setuptools ];

  dependencies = [
    ps.aiohttp
    ps.base58
    ps.httptools # llhttp: the request parser of its HTTP/1.1 server
    ps.pydantic
    ps.pynacl
    ps.uvloop # its event loop: less of the CPU shared with the gateway under test
  ];

  nativeCheckInputs = [
    ps.hypothesis
    ps.pytest-asyncio
    ps.pytest-timeout
    ps.pytestCheckHook
    (ps.toPythonModule tfgateway-agent) # cross-checks with the agent's signer and crypto
  ];

  preCheck = ''
    cd ..
  '';
  enabledTestPaths = [ "tests/unit/devexplorer" ];

  pythonImportsCheck = [ "tfgateway_devexplorer" ];

  meta = {
    description = pyproject.project.description;
    license = lib.licenses.asl20;
    mainProgram = "tfgateway-devexplorer";
    platforms = lib.platforms.linux;
  };
}
