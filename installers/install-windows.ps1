# Install Tessera into a private venv with a Start-menu shortcut.
# Usage: powershell -ExecutionPolicy Bypass -File install-windows.ps1 [-Prefix DIR]
param([string]$Prefix = "$env:LOCALAPPDATA\Tessera")
$ErrorActionPreference = "Stop"
$here = Split-Path -Parent (Split-Path -Parent $MyInvocation.MyCommand.Path)
$python = if ($env:PYTHON) { $env:PYTHON } else { "py" }
$extras = if ($env:TESSERA_EXTRAS) { $env:TESSERA_EXTRAS } else { "gui" }
$spec = if ($env:TESSERA_SPEC) { $env:TESSERA_SPEC } else { "$here[$extras]" }

& $python -c "import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)"
if ($LASTEXITCODE -ne 0) { Write-Error "Tessera needs Python >= 3.10 from python.org"; exit 2 }
& $python -m venv $Prefix
& "$Prefix\Scripts\python.exe" -m pip install --upgrade pip
& "$Prefix\Scripts\python.exe" -m pip install $spec

$shell = New-Object -ComObject WScript.Shell
$lnk = $shell.CreateShortcut("$env:APPDATA\Microsoft\Windows\Start Menu\Programs\Tessera.lnk")
$lnk.TargetPath = "$Prefix\Scripts\tessera.exe"
$lnk.Arguments = "view"
$lnk.Save()
& "$Prefix\Scripts\tessera.exe" --version
Write-Host "Installed. Start Tessera from the Start menu."
