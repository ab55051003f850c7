export { EtcdProcess as EtcdServer } from '@expertmesh/discovery';
