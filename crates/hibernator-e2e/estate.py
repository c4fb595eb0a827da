"""A small AWS estate in moto for the end-to-end tests and the demo, and snapshots of its state.

Usage: python estate.py ENDPOINT create SPEC_JSON   -> prints what was created (JSON)
       python estate.py ENDPOINT snapshot           -> prints the state of every resource (JSON)
       python estate.py ENDPOINT set STATE_JSON     -> puts resources into a state, as a person
                                                       would by hand (prints {})

STATE_JSON: {"rds": {"db-1": "available"}, "ec2": {"web-1": "running"},
             "nodegroups": {"eks-1/ng-a": [1, 2, 4]}} (the snapshot's shape).

SPEC_JSON: {"rds": ["prod-db", ...], "eks": {"prod-eks-1": {"default-ng": [1, 2, 3], ...}},
            "ec2": [{"name": "web-1", "tags": {"team": "web"}, "running": true}, ...],
            "asg": {"web-asg": [1, 2, 4]}}
Node group and ASG sizes are [min, desired, max].
"""
import json
import sys

import boto3

REGION = "us-east-1"


def client(endpoint, service):
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def create(endpoint, spec):
    rds = client(endpoint, "rds")
    for db in spec.get("rds", []):
        rds.create_db_instance(
            DBInstanceIdentifier=db,
            DBInstanceClass="db.t3.micro",
            Engine="postgres",
            MasterUsername="admin",
            MasterUserPassword="not-a-secret-1",
            AllocatedStorage=20,
        )
    eks = client(endpoint, "eks")
    for cluster, groups in spec.get("eks", {}).items():
        eks.create_cluster(
            name=cluster,
            roleArn="arn:aws:iam::123456789012:role/eks",
            resourcesVpcConfig={"subnetIds": ["subnet-1", "subnet-2"]},
        )
        for ng, (lo, desired, hi) in groups.items():
            eks.create_nodegroup(
                clusterName=cluster,
                nodegroupName=ng,
                scalingConfig={"minSize": lo, "desiredSize": desired, "maxSize": hi},
                subnets=["subnet-1"],
                nodeRole="arn:aws:iam::123456789012:role/node",
            )
    ec2 = client(endpoint, "ec2")
    for inst in spec.get("ec2", []):
        tags = [{"Key": "Name", "Value": inst["name"]}] + [
            {"Key": k, "Value": v} for k, v in inst.get("tags", {}).items()
        ]
        out = ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.micro",
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )
        iid = out["Instances"][0]["InstanceId"]
        if not inst.get("running", True):
            ec2.stop_instances(InstanceIds=[iid])
    asg = client(endpoint, "autoscaling")
    if spec.get("asg"):
        ec2.create_launch_template(
            LaunchTemplateName="estate",
            LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"},
        )
    for name, (lo, desired, hi) in spec.get("asg", {}).items():
        asg.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateName": "estate"},
            MinSize=lo,
            DesiredCapacity=desired,
            MaxSize=hi,
            AvailabilityZones=["us-east-1a"],
        )
    return snapshot(endpoint)


def snapshot(endpoint):
    rds = client(endpoint, "rds")
    eks = client(endpoint, "eks")
    ec2 = client(endpoint, "ec2")
    asg = client(endpoint, "autoscaling")
    out = {"rds": {}, "rdsSnapshots": [], "nodegroups": {}, "ec2": {}, "asg": {}}
    for db in rds.describe_db_instances()["DBInstances"]:
        out["rds"][db["DBInstanceIdentifier"]] = db["DBInstanceStatus"]
    for s in rds.describe_db_snapshots()["DBSnapshots"]:
        out["rdsSnapshots"].append(s["DBSnapshotIdentifier"])
    for cluster in eks.list_clusters()["clusters"]:
        for ng in eks.list_nodegroups(clusterName=cluster)["nodegroups"]:
            sc = eks.describe_nodegroup(clusterName=cluster, nodegroupName=ng)["nodegroup"]["scalingConfig"]
            out["nodegroups"][f"{cluster}/{ng}"] = [sc["minSize"], sc["desiredSize"], sc["maxSize"]]
    for r in ec2.describe_instances()["Reservations"]:
        for i in r["Instances"]:
            name = next((t["Value"] for t in i.get("Tags", []) if t["Key"] == "Name"), i["InstanceId"])
            managed = any(t["Key"] == "aws:autoscaling:groupName" for t in i.get("Tags", []))
            if not managed:
                out["ec2"][name] = i["State"]["Name"]
    for g in asg.describe_auto_scaling_groups()["AutoScalingGroups"]:
        out["asg"][g["AutoScalingGroupName"]] = [g["MinSize"], g["DesiredCapacity"], g["MaxSize"]]
    return out


def set_state(endpoint, state):
    rds = client(endpoint, "rds")
    for db, status in state.get("rds", {}).items():
        current = rds.describe_db_instances(DBInstanceIdentifier=db)["DBInstances"][0]["DBInstanceStatus"]
        if status == "available" and current == "stopped":
            rds.start_db_instance(DBInstanceIdentifier=db)
        elif status == "stopped" and current == "available":
            rds.stop_db_instance(DBInstanceIdentifier=db)
    ec2 = client(endpoint, "ec2")
    by_name = {}
    for r in ec2.describe_instances()["Reservations"]:
        for i in r["Instances"]:
            name = next((t["Value"] for t in i.get("Tags", []) if t["Key"] == "Name"), i["InstanceId"])
            by_name[name] = (i["InstanceId"], i["State"]["Name"])
    for name, status in state.get("ec2", {}).items():
        iid, current = by_name[name]
        if status == "running" and current == "stopped":
            ec2.start_instances(InstanceIds=[iid])
        elif status == "stopped" and current == "running":
            ec2.stop_instances(InstanceIds=[iid])
    eks = client(endpoint, "eks")
    for key, (lo, desired, hi) in state.get("nodegroups", {}).items():
        cluster, ng = key.split("/", 1)
        eks.update_nodegroup_config(
            clusterName=cluster,
            nodegroupName=ng,
            scalingConfig={"minSize": lo, "desiredSize": desired, "maxSize": hi},
        )
    return {}


def ids(endpoint):
    ec2 = client(endpoint, "ec2")
    out = {}
    for r in ec2.describe_instances()["Reservations"]:
        for i in r["Instances"]:
            name = next((t["Value"] for t in i.get("Tags", []) if t["Key"] == "Name"), i["InstanceId"])
            out[name] = i["InstanceId"]
    return out


def main():
    endpoint, command = sys.argv[1], sys.argv[2]
    if command == "create":
        print(json.dumps(create(endpoint, json.loads(sys.argv[3]))))
    elif command == "snapshot":
        print(json.dumps(snapshot(endpoint)))
    elif command == "set":
        print(json.dumps(set_state(endpoint, json.loads(sys.argv[3]))))
    elif command == "ids":
        print(json.dumps(ids(endpoint)))
    else:
        sys.exit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
