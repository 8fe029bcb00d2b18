#!/usr/bin/env bash
# Builds and runs a fresh console app, outside the repository, that uses the packed libraries as any application would:
# PackageReferences to ScalableCache.Core and ScalableCache.Plugins.Exact from PACK_DIR (beside the configured feeds), and
# libtorch-cpu-linux-x64, the native package the application chooses.
#   usage: .ci/consumer-check.sh PACK_DIR [PROGRAM_CS [ARGS…]]   (default PROGRAM_CS: .ci/consumer/Program.cs)
# The program runs from the repository root with ARGS; it passes when it exits 0 (and, for the default one, prints its OK line).
# Our packages restore into a temporary packages folder (the usual one serves everything else as a fallback folder), so a
# package rebuilt with the same version is never shadowed by an older copy in the NuGet cache.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
pack="$(cd "${1:?usage: $0 PACK_DIR [PROGRAM_CS]}" && pwd)"
program="$(realpath "${2:-$repo/.ci/consumer/Program.cs}")"
shift $(( $# > 1 ? 2 : 1 ))
version="$(dotnet msbuild "$repo/src/Core/Core.csproj" -getProperty:Version)"
libtorch="$(sed -n 's/.*Include="libtorch-cpu-linux-x64" Version="\([^"]*\)".*/\1/p' "$repo/Directory.Packages.props")"
global="$(dotnet nuget locals global-packages --list | sed 's/^global-packages: *//')"

app="$(mktemp -d)"
trap 'rm -rf "$app"' EXIT
cp "$program" "$app/Program.cs"
cat > "$app/Consumer.csproj" <<PROJECT
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <OutputType>Exe</OutputType>
    <TargetFramework>net10.0</TargetFramework>
    <Nullable>enable</Nullable>
    <ImplicitUsings>enable</ImplicitUsings>
    <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
    <RestorePackagesPath>$app/packages</RestorePackagesPath>
    <RestoreAdditionalProjectFallbackFolders>$global</RestoreAdditionalProjectFallbackFolders>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="ScalableCache.Core" Version="[$version]" />
    <PackageReference Include="ScalableCache.Plugins.Exact" Version="[$version]" />
    <PackageReference Include="libtorch-cpu-linux-x64" Version="$libtorch" />
  </ItemGroup>
</Project>
PROJECT
cat > "$app/nuget.config" <<CONFIG
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="scalablecache-pack" value="$pack" />
  </packageSources>
</configuration>
CONFIG

echo "consumer app in $app: ScalableCache.* $version from $pack, libtorch-cpu-linux-x64 $libtorch"
# Nothing above the temporary folder may shape the build (no Directory.Build.props, no central package versions).
dotnet build "$app/Consumer.csproj" -c Release -nologo \
  -p:ImportDirectoryBuildProps=false -p:ImportDirectoryBuildTargets=false -p:ImportDirectoryPackagesProps=false
(cd "$repo" && dotnet "$app/bin/Release/net10.0/Consumer.dll" "$@") | tee "$app/output.txt"
if [[ "$program" == "$repo/.ci/consumer/Program.cs" ]]; then
  grep -q "^consumer check: OK$" "$app/output.txt"
fi
