"""The public surface is explicit: nothing leaks out of the packages by accident."""

from __future__ import annotations

import opendso
import opendso.calc
import opendso.der
import opendso.grid
import opendso.grid.io
import opendso.operations.switching
import opendso.store
import opendso.telemetry

EXPECTED = {
    opendso: {
        "CalculationError",
        "GridSourceError",
        "GridValidationError",
        "InputError",
        "OpenDSOError",
        "__version__",
    },
    opendso.grid: {
        "Finding",
        "Grid",
        "ProfileAssignment",
        "Profiles",
        "Topology",
        "analyse_topology",
        "assert_valid",
        "from_pandapower",
        "load_grid",
        "path_from_source",
        "read_opendss",
        "read_pgm_json",
        "to_pandapower",
        "validate_grid",
        "write_pandapower_json",
        "write_pgm_json",
    },
    opendso.grid.io: {
        "from_pandapower",
        "read_opendss",
        "read_pgm_json",
        "to_pandapower",
        "write_pandapower_json",
        "write_pgm_json",
    },
    opendso.calc: {
        "DEFAULT_ACCURACY",
        "Accuracy",
        "Case",
        "EstimationMethod",
        "EstimationResult",
        "FaultType",
        "MeasurementFileError",
        "Measurements",
        "ParquetWriter",
        "PowerFlowMethod",
        "PowerFlowResult",
        "ShortCircuitResult",
        "TimeSeriesResult",
        "ViolationLimits",
        "combine_measurements",
        "measurements_from_power_flow",
        "place_measurements",
        "pseudo_measurements",
        "read_measurements",
        "run_power_flow",
        "run_short_circuit",
        "run_state_estimation",
        "run_time_series",
    },
    opendso.der: {
        "AccessPrinciple",
        "Agreement",
        "AgreementKind",
        "AssetKind",
        "ConnectionRequest",
        "Control",
        "ControlProtocol",
        "DerAsset",
        "DerRegistry",
        "DerTable",
        "FlexibleAsset",
        "ImportSummary",
        "QueueEntry",
        "RequestStatus",
        "Transition",
        "read_der_csv",
    },
    opendso.store: {
        "DiskBuffer",
        "Event",
        "EventLog",
        "Historian",
        "Measurement",
        "Quality",
        "StoreError",
        "StoreInputError",
        "StoreUnavailableError",
        "UnknownPointError",
        "WriteResult",
        "data_dir",
        "default_database_url",
    },
    opendso.telemetry: {
        "AdapterCounters",
        "CommandKind",
        "CommandOutcome",
        "CommandRequest",
        "CommandResult",
        "FieldServer",
        "FieldSimulator",
        "ModbusFieldServer",
        "MqttFieldServer",
        "Scenario",
        "ScenarioError",
        "ScenarioEvent",
        "read_scenario",
        "with_fault_indicators",
        "InProcessAdapter",
        "Measurement",
        "ModbusPointServer",
        "ModbusPoller",
        "MqttPublisher",
        "MqttSubscriber",
        "Point",
        "PointMap",
        "PointMapError",
        "PointMapFinding",
        "Quality",
        "Connection",
        "TelemetryAdapter",
        "assert_valid_against_grid",
        "modbus_pollers",
        "mqtt_subscribers",
        "point_map_for_grid",
        "read_point_map",
        "validate_against_grid",
        "write_point_map",
    },
    opendso.operations.switching: {
        "CommandPath",
        "Confirmation",
        "DeviceClass",
        "DocumentAction",
        "DocumentKind",
        "DocumentState",
        "Earth",
        "EarthKind",
        "GateConfig",
        "GateDecision",
        "GateRule",
        "Override",
        "PlanEntry",
        "PlanSimulation",
        "PlanState",
        "PlanStep",
        "SafetyDocument",
        "SafetyGate",
        "StepKind",
        "StepSimulation",
        "SwitchAction",
        "SwitchingDispatcher",
        "SwitchingOutcome",
        "SwitchingPlan",
        "SwitchingRegister",
        "SwitchingRequest",
        "SwitchingState",
        "SwitchingStep",
        "Tag",
        "TagKind",
        "earth_refusal",
        "execute_steps",
        "measured_nodes",
        "next_document_state",
        "qualities_from_latest",
        "read_gate_config",
        "route_by_point_map",
        "simulate_plan",
        "switching_state",
    },
}


def test_one_measurement_and_one_quality_everywhere() -> None:
    assert opendso.store.Measurement is opendso.telemetry.Measurement
    assert opendso.store.Quality is opendso.telemetry.Quality


def test_public_surface_is_pinned() -> None:
    for module, names in EXPECTED.items():
        assert set(module.__all__) == names, module.__name__
        assert list(module.__all__) == sorted(module.__all__), module.__name__
        for name in names:
            assert getattr(module, name) is not None


def test_importing_opendso_does_not_import_pandapower() -> None:
    import subprocess
    import sys

    code = "import sys, opendso.grid, opendso.calc; print('pandapower' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
